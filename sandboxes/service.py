"""A SandboxFusion-compatible HTTP service (`POST /run_code`) in front of a local backend, with a concurrency
limit and a bounded queue, so sandbox pools can run on other hosts."""
from __future__ import annotations

import asyncio

from fastapi import FastAPI, HTTPException

from slime_rl.config import SandboxConfig

from .base import RunRequest, RunResult, make_sandbox


def create_app(cfg: SandboxConfig, max_queue: int = 256) -> FastAPI:
    if cfg.backend == "remote":
        raise ValueError("sandbox.backend: the service needs a local backend (bwrap or docker), not remote")
    sandbox = make_sandbox(cfg)
    slots = asyncio.Semaphore(cfg.concurrency)
    app = FastAPI(title="slime-rl sandbox (SandboxFusion-compatible)")
    app.state.waiting = 0
    app.state.running = 0

    @app.post("/run_code")
    async def run_code(req: RunRequest) -> RunResult:
        if app.state.waiting >= max_queue:
            raise HTTPException(503, f"sandbox queue full ({max_queue} waiting)")
        app.state.waiting += 1
        try:
            async with slots:
                app.state.waiting -= 1
                app.state.running += 1
                try:
                    return await asyncio.to_thread(sandbox.run, req)
                finally:
                    app.state.running -= 1
        except BaseException:
            if app.state.waiting > 0 and app.state.running == 0:
                app.state.waiting -= 1
            raise

    @app.get("/v1/ping")
    async def ping():
        return "pong"

    @app.get("/stats")
    async def stats():
        return {"running": app.state.running, "waiting": app.state.waiting, "concurrency": cfg.concurrency,
                "backend": cfg.backend}

    return app


def serve(cfg: SandboxConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")
