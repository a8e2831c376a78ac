"""Docker backend through the docker SDK: no network, read-only root, tmpfs /tmp, memory/pids/cpu limits, a
non-root user, every capability dropped, no-new-privileges. The image is built without a registry (see rootfs.py)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import requests

from slime_rl.config import SandboxConfig

from .base import CommandResult, RunRequest, RunResult, RunStatus, write_files

IMAGE = "slime-rl/sandbox-python:latest"
SANDBOX_UID = 65534


class DockerSandbox:
    """Sync: `run(req, cancel=None) -> RunResult`, thread-safe (one container per run)."""

    def __init__(self, cfg: SandboxConfig, base_url: str | None = None, image: str = IMAGE):
        import docker

        self.cfg, self.image = cfg, image
        base_url = base_url or cfg.docker_url
        self.client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        timeout = min(req.run_timeout or self.cfg.wall_timeout_s, self.cfg.wall_timeout_s)
        memory = min(req.memory_limit_MB or self.cfg.memory_mb, self.cfg.memory_mb)
        with tempfile.TemporaryDirectory(prefix="slime-dkr-") as tmp:
            work = Path(tmp)
            command = " ".join(write_files(work, req))
            if req.stdin:
                (work / ".stdin").write_text(req.stdin)
                command += " < .stdin"
            for path in [work, *work.rglob("*")]:
                shutil.chown(path, SANDBOX_UID, SANDBOX_UID)
            container = self.client.containers.create(
                self.image,
                command=["sh", "-c", command],
                user=f"{SANDBOX_UID}:{SANDBOX_UID}",
                network_mode="none",
                read_only=True,
                working_dir="/work",
                volumes={tmp: {"bind": "/work", "mode": "rw"}},
                tmpfs={"/tmp": "rw,size=64m"},
                mem_limit=f"{memory}m",
                memswap_limit=f"{memory}m",
                pids_limit=self.cfg.max_processes,
                nano_cpus=1_000_000_000,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                environment={},
                detach=True,
                ulimits=[
                    _ulimit("cpu", self.cfg.cpu_seconds, self.cfg.cpu_seconds + 1),
                    _ulimit("fsize", self.cfg.max_file_mb << 20),
                ],
            )
            try:
                return self._execute(container, timeout, cancel)
            finally:
                container.remove(force=True)

    def close(self) -> None:
        self.client.close()

    def _execute(self, container, timeout: float, cancel: threading.Event | None) -> RunResult:
        started = time.monotonic()
        container.start()
        overflow = threading.Event()
        watcher = threading.Thread(target=self._watch_output, args=(container, overflow), daemon=True)
        watcher.start()
        status = RunStatus.FINISHED
        while True:  # short blocking waits: the exit is seen at once, a timeout or a cancel within 0.2 s
            try:
                container.wait(timeout=0.2)
                break
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                pass
            if time.monotonic() - started > timeout or (cancel is not None and cancel.is_set()):
                container.kill()
                status = RunStatus.TIME_LIMIT
                break
        if overflow.is_set():
            status = RunStatus.ERROR
        elapsed = time.monotonic() - started
        rc = container.wait(timeout=10)["StatusCode"]
        cap = self.cfg.output_cap_bytes
        out = container.logs(stdout=True, stderr=False)[:cap].decode(errors="replace")
        err = container.logs(stdout=False, stderr=True)[:cap].decode(errors="replace")
        if status == RunStatus.FINISHED and rc > 128:  # killed by a signal: SIGXCPU is the CPU limit
            status = RunStatus.TIME_LIMIT if rc == 128 + 24 else RunStatus.ERROR
        return RunResult.from_command(
            CommandResult(status=status, execution_time=elapsed, return_code=rc, stdout=out, stderr=err)
        )

    def _watch_output(self, container, overflow: threading.Event) -> None:
        """Stop the program once it has printed more than the cap, instead of logging gigabytes."""
        total = 0
        try:
            for chunk in container.logs(stream=True, follow=True):
                total += len(chunk)
                if total > self.cfg.output_cap_bytes:
                    overflow.set()
                    container.kill()
                    return
        except Exception:  # the container went away: nothing left to watch
            return


def _ulimit(name: str, soft: int, hard: int | None = None):
    import docker

    # a hard CPU limit above the soft one: SIGXCPU (reported as the CPU limit) arrives before SIGKILL
    return docker.types.Ulimit(name=name, soft=soft, hard=soft if hard is None else hard)
