"""Nothing a run starts outlives the process that started it, however that process ends (SIGKILL included).

`guard()` puts a tag unique to this process in its environment, so everything it starts, and everything those
start, carries it: redis-server, the engines, Ray's gcs_server, raylet, agents and workers. It also starts a small
reaper process outside that tree (its own session, no tag), which waits for its parent to end and then stops every
process still carrying the tag, or seen below its parent while the parent lived (`Scope`).

The parent-death signal (`children.spawn`) already ends the direct children at once; the reaper catches the rest,
which no signal of ours reaches: processes reparented to init when their own parent died. Ray's dashboard and
runtime-env agents are such: when the raylet is killed they retry the GCS, which died with it, for about a minute
before exiting. In a normal exit the reaper finds nothing and leaves.

Run as `python -m slime_rl.reaper TAG PARENT_PID` (by `guard`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ENV = "SLIME_RL_SCOPE"
_guarded_pid = 0  # the process guard() ran in (a fork of it must start its own reaper)
_reaper: subprocess.Popen | None = None  # held, not waited for: it ends after this process


def guard() -> str:
    """Start the reaper for this process (once per process) and return the tag its descendants carry."""
    global _guarded_pid, _reaper
    if _guarded_pid == os.getpid():
        return os.environ[ENV]
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != ENV}  # the reaper is outside the scope it stops
    _reaper = subprocess.Popen(
        [sys.executable, "-m", "slime_rl.reaper", tag, str(os.getpid())],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.environ[ENV] = tag
    _guarded_pid = os.getpid()
    return tag


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, ..., start time at index 19."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].decode().split()


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for whoever reaps it."""
    try:
        return _stat(pid)[0] == "Z"
    except (OSError, IndexError):
        return True


class Scope:
    """What to stop: every process that carries the tag, and every descendant of the parent seen while it lived.
    The tag finds what was started after the last look; the record finds what hides its environment (Ray's agents
    set their process title, which overwrites the environment block that /proc shows)."""

    def __init__(self, tag: str, parent: int):
        self.marker = f"{ENV}={tag}".encode()
        self.parent = parent
        self.seen: dict[int, str] = {}  # pid -> start time, so a reused pid is not mistaken for one of ours

    def _table(self) -> dict[int, list[str]]:
        table = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    table[int(name)] = _stat(name)
                except (OSError, IndexError):
                    continue
        return table

    def watch(self) -> None:
        """Record the parent's descendants as they are now."""
        table = self._table()
        children: dict[str, list[int]] = {}
        for pid, fields in table.items():
            children.setdefault(fields[1], []).append(pid)
        todo = [self.parent]
        while todo:
            for pid in children.get(str(todo.pop()), []):
                if pid != os.getpid():
                    self.seen.setdefault(pid, table[pid][19])
                    todo.append(pid)

    def members(self) -> list[int]:
        """Live members: tagged, or recorded with the same start time; never this process."""
        found = []
        for pid, fields in self._table().items():
            if pid == os.getpid() or fields[0] == "Z":
                continue
            if self.seen.get(pid) == fields[19]:
                found.append(pid)
                continue
            try:
                if self.marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found.append(pid)
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return found

    def stop(self, grace: float = 5.0, deadline: float = 60.0) -> None:
        """SIGTERM every member, SIGKILL those left after `grace`; look again until nothing is left (a process may
        start one more child while it is being stopped)."""
        end = time.monotonic() + deadline
        while (pids := self.members()) and time.monotonic() < end:
            _signal_all(pids, signal.SIGTERM)
            wait_until = time.monotonic() + grace
            while (left := [p for p in pids if not _gone(p)]) and time.monotonic() < wait_until:
                time.sleep(0.1)
            _signal_all(left, signal.SIGKILL)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> None:
    scope = Scope(argv[0], parent=int(argv[1]))
    # its job is to outlive the run: a signal meant for the whole group or service (Ctrl-C, systemd's stop) must
    # not end it before the run's processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while os.getppid() == scope.parent:
        scope.watch()
        time.sleep(1.0)
    scope.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
