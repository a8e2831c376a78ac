"""bubblewrap backend: the program runs as an unprivileged uid in fresh namespaces (no network, own PIDs), with a
read-only system, a private /tmp and its own writable /work, under rlimits (CPU seconds, address space, processes,
file size), a wall-clock timeout that kills the whole tree, and an output cap. The host's home directories, /root
and the parent's environment are simply not there; the Python is Debian's /usr/bin/python3 (outside /root).

Speed: starting the namespaces costs about as much as starting Python, so a few sandboxes are started ahead of
need (`warm_pool`). Each waits in a tiny shell for a "go" line on its stdin; a run writes its files into the sandbox's
/work, sends the limits and the command as that line, and the shell applies the limits and execs the program.
A warm sandbox serves exactly one run. Each sandbox has its own uid (round-robin over `uid_count` uids), so the
process limit and the kill are per run, and concurrent runs cannot starve each other's fork budget."""

from __future__ import annotations

import collections
import itertools
import os
import random
import shutil
import subprocess
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from slime_rl.config import SandboxConfig

from .base import RunRequest, RunResult, write_files
from .limits import kill_group, supervise

SYSTEM_DIRS = ("/usr", "/etc/alternatives", "/etc/ssl", "/etc/python3.11")
# The first line of stdin is the go message (dash's `read` takes one byte at a time, so the rest of stdin is left
# for the program). The limits come with the command, so one warm sandbox fits any request.
SETUP_FAILED = "slime-sandbox: set-up failed"
LAUNCHER = f"""fail() {{ echo "{SETUP_FAILED}: $1" >&2; exit 125; }}
read -r cpu mem nproc fsize cmd || fail "no go message"
ulimit -c 0 && ulimit -S -t "$cpu" && ulimit -H -t $((cpu + 1)) && ulimit -v "$mem" && ulimit -p "$nproc" \\
  && ulimit -f "$fsize" || fail "ulimit"
exec $cmd"""


_UID_CYCLES: dict[tuple[int, int], itertools.cycle] = {}
_UID_LOCK = threading.Lock()


def _uid_cycle(base: int, count: int):
    """One cycle per uid range and process (sandboxes in one process never share a uid while both run); a random
    start makes two processes unlikely to walk the same uids in step."""
    with _UID_LOCK:
        if (base, count) not in _UID_CYCLES:
            start = random.randrange(count)
            _UID_CYCLES[(base, count)] = itertools.cycle(
                [*range(base + start, base + count), *range(base, base + start)]
            )
        return _UID_CYCLES[(base, count)]


@dataclass
class _Warm:
    proc: subprocess.Popen
    root: Path  # host folder holding /work; removed after the run
    uid: int


class BwrapSandbox:
    """Sync: `run(req, cancel=None) -> RunResult` is thread-safe; call `close()` to stop the warm sandboxes."""

    def __init__(self, cfg: SandboxConfig, bwrap: str | None = None):
        self.cfg = cfg
        self.bwrap = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        for tool in (self.bwrap, "/usr/bin/setpriv", "/usr/bin/python3"):
            if not Path(tool).exists():
                raise FileNotFoundError(f"{tool} is missing (Debian packages bubblewrap, util-linux, python3)")
        self._uids = _uid_cycle(cfg.uid_base, cfg.uid_count)
        self._lock = threading.Lock()
        self._pool: collections.deque[_Warm] = collections.deque()
        self._filler = ThreadPoolExecutor(1, thread_name_prefix="bwrap-warm") if cfg.warm_pool else None
        self._reaper = ThreadPoolExecutor(1, thread_name_prefix="bwrap-reap")
        self._closed = False
        self._finalizer = weakref.finalize(self, _discard_all, self._pool, self._lock)
        for _ in range(cfg.warm_pool):
            self._filler.submit(self._refill)

    def _argv(self, work: Path, uid: int) -> list[str]:
        binds: list[str] = []
        for d in SYSTEM_DIRS:
            if Path(d).exists():
                binds += ["--ro-bind", d, d]
        return [
            "/usr/bin/setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--",
            self.bwrap,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            *binds,
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--bind",
            str(work),
            "/work",
            "--chdir",
            "/work",
            "--remount-ro",
            "/",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/tmp",
            "--setenv",
            "PYTHONDONTWRITEBYTECODE",
            "1",
            "--",
            "/bin/sh",
            "-c",
            LAUNCHER,
            "launcher",
        ]

    def _spawn(self) -> _Warm:
        uid = next(self._uids)
        root = Path(tempfile.mkdtemp(prefix="slime-sbx-"))
        work = root / "work"
        work.mkdir()
        for path in (root, work):
            os.chown(path, uid, uid)
        try:
            proc = subprocess.Popen(
                self._argv(work, uid),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env={"PATH": "/usr/bin:/bin"},
            )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return _Warm(proc, root, uid)

    def _refill(self) -> None:
        with self._lock:
            if self._closed or len(self._pool) >= self.cfg.warm_pool:
                return
        warm = self._spawn()
        with self._lock:
            if not self._closed:
                self._pool.append(warm)
                return
        _discard(warm)

    def _take(self) -> _Warm:
        with self._lock:
            if self._closed:
                raise RuntimeError("BwrapSandbox is closed")
            warm = self._pool.popleft() if self._pool else None
        if self._filler is not None:
            self._filler.submit(self._refill)
        if warm is not None and warm.proc.poll() is None:
            return warm
        if warm is not None:
            self._reaper.submit(_discard, warm)  # died while waiting (killed from outside): start a fresh one
        return self._spawn()

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        cfg = self.cfg
        timeout = min(req.run_timeout or cfg.wall_timeout_s, cfg.wall_timeout_s)
        memory_mb = min(req.memory_limit_MB or cfg.memory_mb, cfg.memory_mb)
        warm = self._take()
        try:
            work = warm.root / "work"
            command = write_files(work, req)
            for path in work.rglob("*"):
                os.chown(path, warm.uid, warm.uid)
            go = (
                f"{cfg.cpu_seconds} {memory_mb << 10} {cfg.max_processes} {cfg.max_file_mb << 11} {' '.join(command)}\n"
            )
            res = supervise(warm.proc, go + (req.stdin or ""), timeout, cfg.output_cap_bytes, cancel)
        finally:
            self._reaper.submit(_discard, warm)  # off the caller's path: the program has already exited
        if res.return_code == 125 and SETUP_FAILED in res.stderr:
            return RunResult(status="SandboxError", message=f"sandbox set-up failed: {res.stderr[-500:]}")
        return RunResult.from_command(res)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        if self._filler is not None:
            self._filler.shutdown(wait=True)
        self._reaper.shutdown(wait=True)
        self._finalizer()


def _discard(warm: _Warm) -> None:
    kill_group(warm.proc)
    try:
        warm.proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    for stream in (warm.proc.stdin, warm.proc.stdout, warm.proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    shutil.rmtree(warm.root, ignore_errors=True)


def _discard_all(pool: collections.deque, lock: threading.Lock) -> None:
    with lock:
        items = list(pool)
        pool.clear()
    for warm in items:
        _discard(warm)
