"""Supervising a started sandbox process: a wall-clock timeout and an output cap, killing its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from .base import CommandResult, RunStatus


def supervise(
    proc: subprocess.Popen, stdin: str | None, timeout: float, cap: int, cancel: threading.Event | None = None
) -> CommandResult:
    """`proc` must lead its own process group (start_new_session=True) with stdin/stdout/stderr pipes.
    `cancel` (set from another thread, e.g. when the rollout that asked is aborted) kills the run at once."""
    started = time.monotonic()
    chunks = {"out": bytearray(), "err": bytearray()}
    overflow = threading.Event()

    def pump(stream, key: str) -> None:
        while True:
            data = stream.read1(65536)
            if not data:
                return
            room = cap - len(chunks["out"]) - len(chunks["err"])
            if room > 0:
                chunks[key] += data[:room]
            if len(data) > room:
                overflow.set()  # the cap is reached: stop the program rather than drain gigabytes
                kill_group(proc)
                return

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True),
    ]
    for t in threads:
        t.start()

    def feed() -> None:  # in a thread: a program that never reads its input must not block the watchdog
        try:
            if stdin:
                proc.stdin.write(stdin.encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the program exited or never read its input

    threads.append(threading.Thread(target=feed, daemon=True))
    threads[-1].start()
    timed_out = threading.Event()
    exited = threading.Event()

    def watchdog() -> None:  # the main thread blocks in wait(), so an exit is seen at once
        deadline = started + timeout
        while not exited.wait(min(0.05, max(deadline - time.monotonic(), 0.001))):
            if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                timed_out.set()
                kill_group(proc)
                return

    dog = threading.Thread(target=watchdog, daemon=True)
    dog.start()
    proc.wait()
    exited.set()
    dog.join()
    for t in threads:
        t.join(2)
    rc = proc.returncode
    signalled = rc < 0 or rc > 128  # bwrap reports a child killed by signal N as 128 + N
    if timed_out.is_set() or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        status = RunStatus.TIME_LIMIT  # wall clock, or the CPU-seconds limit
    elif overflow.is_set() or signalled:
        status = RunStatus.ERROR
    else:
        status = RunStatus.FINISHED
    err = chunks["err"].decode(errors="replace")
    if overflow.is_set():
        err += f"\n[output truncated at {cap} bytes; program stopped]"
    return CommandResult(
        status=status,
        execution_time=time.monotonic() - started,
        return_code=rc,
        stdout=chunks["out"].decode(errors="replace"),
        stderr=err,
    )


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
