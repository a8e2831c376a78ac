"""bubblewrap backend: the program runs as an unprivileged uid in fresh namespaces (no network, own PIDs),
with a read-only system, a private /tmp and its own writable /work, under rlimits (CPU seconds, address space,
processes, file size), a wall-clock timeout that kills the whole tree, and an output cap. The host's home
directories, /root and the parent's environment are simply not there."""
from __future__ import annotations

import resource
import shutil
import tempfile
from pathlib import Path

from slime_rl.config import SandboxConfig

from .base import RunRequest, RunResult, write_files
from .limits import run_capped

SANDBOX_UID = 65534  # nobody
SYSTEM_DIRS = ("/usr", "/etc/alternatives", "/etc/ssl", "/etc/python3.11")


class BwrapSandbox:
    def __init__(self, cfg: SandboxConfig, bwrap: str | None = None):
        self.cfg = cfg
        self.bwrap = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        if not Path(self.bwrap).exists():
            raise FileNotFoundError("bubblewrap is not installed (Debian package `bubblewrap`)")

    def _argv(self, workdir: Path, command: list[str]) -> list[str]:
        binds: list[str] = []
        for d in SYSTEM_DIRS:
            if Path(d).exists():
                binds += ["--ro-bind", d, d]
        return [
            "setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--",
            self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", *binds,
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
            "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--bind", str(workdir), "/work", "--chdir", "/work", "--remount-ro", "/",
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--", *command,
        ]

    def _rlimits(self, memory_mb: int):
        cfg = self.cfg

        def apply() -> None:
            resource.setrlimit(resource.RLIMIT_CPU, (cfg.cpu_seconds, cfg.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
            resource.setrlimit(resource.RLIMIT_NPROC, (cfg.max_processes, cfg.max_processes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (cfg.max_file_mb << 20, cfg.max_file_mb << 20))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        return apply

    def run(self, req: RunRequest, cancel=None) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="slime-sbx-") as tmp:
            workdir = Path(tmp) / "work"
            workdir.mkdir()
            command = write_files(workdir, req)
            shutil.chown(tmp, SANDBOX_UID, SANDBOX_UID)
            for path in [workdir, *workdir.rglob("*")]:
                shutil.chown(path, SANDBOX_UID, SANDBOX_UID)
            timeout = min(req.run_timeout or self.cfg.wall_timeout_s, self.cfg.wall_timeout_s)
            memory = min(req.memory_limit_MB or self.cfg.memory_mb, self.cfg.memory_mb)
            res = run_capped(self._argv(workdir, command), req.stdin, timeout, self.cfg.output_cap_bytes,
                             env={"PATH": "/usr/bin:/bin"}, preexec=self._rlimits(memory), cancel=cancel)
        return RunResult.from_command(res)
