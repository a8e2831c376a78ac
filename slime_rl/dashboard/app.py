"""The live dashboard: a page with charts fed by server-sent events, a JSON API, Prometheus /metrics, and
token-protected control actions (pause/resume rollouts, checkpoint) written to the run's control stream. One
dashboard serves one run: it reads and writes only that run's keys (RunKeys)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ..run_keys import RunKeys
from .aggregate import Aggregator
from .prometheus import render_prometheus

STATIC = Path(__file__).parent / "static"
ACTIONS = ("pause_rollout", "resume_rollout", "checkpoint")


class MetricsFeed:
    """Tails the run's metrics stream into an Aggregator (a background thread; survives Redis restarts)."""

    def __init__(self, redis_url: str, keys: RunKeys):
        self.r = redis.Redis.from_url(redis_url)
        self.stream, self.agg, self.last_id = keys.metrics, Aggregator(), "0-0"
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="metrics-feed")
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                got = self.r.xread({self.stream: self.last_id}, count=500, block=500)
            except redis.RedisError:
                time.sleep(1.0)
                continue
            for _, entries in got or []:
                with self.lock:
                    for eid, fields in entries:
                        self.last_id = eid.decode()
                        try:
                            self.agg.add(json.loads(fields[b"json"]))
                        except (KeyError, ValueError):
                            continue  # a malformed record never takes the dashboard down

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.agg.snapshot()

    def trajectory(self, traj_id: str) -> dict[str, Any] | None:
        with self.lock:
            return self.agg.trajectory(traj_id)

    def stop(self) -> None:
        self._stop.set()


def _tokenizer_for(run_dir: Path | None):
    if run_dir is None or not (run_dir / "config.yaml").exists():
        return None
    try:
        path = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["path"]
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception:  # no tokenizer: the viewer shows token ids
        return None


def create_app(redis_url: str, keys: RunKeys, run_dir: str | Path | None = None, token: str | None = None) -> FastAPI:
    feed = MetricsFeed(redis_url, keys)
    run_dir = Path(run_dir) if run_dir else None
    tokenizer_box: dict[str, Any] = {}
    control = redis.Redis.from_url(redis_url)
    app = FastAPI(title="slime-rl dashboard")
    app.state.feed = feed
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/summary")
    async def summary():
        snap = feed.snapshot()
        return {
            "latest": snap["latest"],
            "rates": snap["rates"],
            "totals": snap["totals"],
            "engine_versions": snap["engine_versions"],
            "records": snap["records"],
            "controls_enabled": token is not None,
        }

    @app.get("/api/series")
    async def series():
        return feed.snapshot()

    @app.get("/api/trajectories")
    async def trajectories():
        return feed.snapshot()["trajectories"]

    @app.get("/api/trajectory/{traj_id}")
    async def trajectory(traj_id: str):
        tr = feed.trajectory(traj_id)
        if tr is None:
            raise HTTPException(404, f"no recent trajectory {traj_id!r}")
        if "tok" not in tokenizer_box:
            tokenizer_box["tok"] = _tokenizer_for(run_dir)
        tok = tokenizer_box["tok"]
        text = (lambda i: tok.decode([i])) if tok else str
        tokens = [{"id": i, "text": text(i), "mask": None} for i in tr.get("prompt_ids") or []]
        tokens += [
            {"id": i, "text": text(i), "mask": m, "version": v}
            for i, m, v in zip(tr.get("response_ids") or [], tr.get("loss_mask") or [], tr.get("versions") or [])
        ]
        return {
            **{k: v for k, v in tr.items() if k not in ("prompt_ids", "response_ids", "loss_mask")},
            "tokens": tokens,
        }

    @app.get("/api/stream")
    async def stream():
        async def events():
            while True:
                yield f"data: {json.dumps(feed.snapshot())}\n\n"
                await asyncio.sleep(1.0)

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(render_prometheus(feed.snapshot()), media_type="text/plain; version=0.0.4")

    @app.post("/api/control/{action}")
    async def control_action(action: str, authorization: str | None = Header(None)):
        if token is None:
            raise HTTPException(403, "control actions are disabled (start the dashboard with a token)")
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "missing or wrong token")
        if action not in ACTIONS:
            raise HTTPException(404, f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        entry = control.xadd(keys.control, {"action": action, "t": time.time()})
        return {"accepted": True, "action": action, "id": entry.decode()}

    @app.on_event("shutdown")
    async def _shutdown():
        feed.stop()

    return app


@dataclass
class DashboardHandle:
    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_dashboard(
    redis_url: str,
    keys: RunKeys,
    run_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
) -> DashboardHandle:
    """Serve in a background thread of this process; returns once it accepts connections."""
    import uvicorn

    from ..net import free_port, wait_for_port

    port = port or free_port(host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(redis_url, keys, run_dir, token), host=host, port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True, name="dashboard")
    thread.start()
    wait_for_port(host, port, timeout=30)
    return DashboardHandle(f"http://{host}:{port}/", server, thread)


def serve(
    redis_url: str,
    keys: RunKeys,
    run_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8365,
    token: str | None = None,
) -> None:
    import uvicorn

    print(f"dashboard of run {keys.run_id}: http://{host}:{port}/")
    uvicorn.run(create_app(redis_url, keys, run_dir, token), host=host, port=port, log_level="warning")
