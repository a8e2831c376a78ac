"""/proc readings for tests that kill processes (imported by tests in several folders; tests/ is on sys.path as
the folder of the root conftest)."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first, then the parent's pid)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for whoever reaps it here)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def forked_children(pid: int) -> list[int]:
    """Children of pid that are forks of it (the same command line), e.g. Megatron's checkpoint writers."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return []
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(_stat_fields(proc.name)[1]) == pid and (proc / "cmdline").read_bytes() == cmdline:
                found.append(int(proc.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below pid in the parent tree (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            children.setdefault(int(_stat_fields(proc.name)[1]), []).append(int(proc.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if alive(p)]


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of pids is alive; return those still alive at the deadline."""
    import time

    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
