"""A SandboxFusion-compatible HTTP service (`POST /run_code`) in front of a local backend, with a concurrency
limit and a bounded queue, so sandbox pools can run on other hosts. `slime-rl sandbox serve` runs it."""

from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

from slime_rl.config import SandboxConfig

from .base import RunRequest, RunResult, make_sandbox


def create_app(cfg: SandboxConfig, max_queue: int = 256) -> FastAPI:
    if cfg.backend == "remote":
        raise ValueError("sandbox.backend: the service needs a local backend (bwrap or docker), not remote")
    sandbox = make_sandbox(cfg)
    slots = asyncio.Semaphore(cfg.concurrency)
    counts = {"running": 0, "waiting": 0, "served": 0}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        sandbox.close()

    app = FastAPI(title="slime-rl sandbox (SandboxFusion-compatible)", lifespan=lifespan)

    @app.post("/run_code")
    async def run_code(req: RunRequest) -> RunResult:
        if counts["waiting"] >= max_queue:
            raise HTTPException(503, f"sandbox queue full ({max_queue} waiting)")
        cancel = threading.Event()  # a client that hangs up cancels this task; the run is then killed
        counts["waiting"] += 1
        queued = True
        try:
            async with slots:
                counts["waiting"] -= 1
                queued = False
                counts["running"] += 1
                try:
                    return await asyncio.to_thread(sandbox.run, req, cancel)
                finally:
                    counts["running"] -= 1
                    counts["served"] += 1
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            if queued:
                counts["waiting"] -= 1

    @app.get("/v1/ping")
    async def ping() -> str:
        return "pong"

    @app.get("/stats")
    async def stats() -> dict:
        return {**counts, "concurrency": cfg.concurrency, "max_queue": max_queue, "backend": cfg.backend}

    return app


def serve(cfg: SandboxConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")
