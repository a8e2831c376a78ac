"""A private dockerd for tests and single-machine runs: its own data-root, exec-root, pidfile and socket, no bridge
or iptables changes, stopped by PID."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


class PrivateDockerd:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.sock = self.root / "docker.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def start(self, timeout: float = 60.0) -> PrivateDockerd:
        binary = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(binary).exists():
            raise FileNotFoundError("dockerd is not installed (Debian package docker.io)")
        for d in ("data", "exec"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "-H", self.url, "--storage-driver=vfs"],
            stdout=open(self.root / "dockerd.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        import docker

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.proc.returncode}); see {self.root / 'dockerd.log'}")
            try:
                docker.DockerClient(base_url=self.url).ping()
                return self
            except Exception:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"dockerd did not answer within {timeout:.0f}s; see {self.root / 'dockerd.log'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
