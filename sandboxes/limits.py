"""Running a command under a wall-clock timeout and an output cap, killing its whole process group."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from .base import CommandResult, RunStatus


def run_capped(argv: list[str], stdin: str | None, timeout: float, cap: int, env: dict[str, str] | None = None,
               preexec=None, cancel: threading.Event | None = None) -> CommandResult:
    """`cancel` (set from another thread, e.g. when the rollout that asked is aborted) kills the run at once."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=env, preexec_fn=preexec)
    chunks = {"out": bytearray(), "err": bytearray()}
    overflow = threading.Event()

    def pump(stream, key: str) -> None:
        while True:
            data = stream.read1(65536)
            if not data:
                return
            buf = chunks[key]
            room = cap - len(chunks["out"]) - len(chunks["err"])
            if room > 0:
                buf += data[:room]
            if len(data) > room:
                overflow.set()  # the cap is reached: stop the program rather than drain gigabytes
                _kill(proc)
                return

    threads = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in threads:
        t.start()
    try:
        if stdin:
            proc.stdin.write(stdin.encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    timed_out = False
    deadline = started + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
            timed_out = True
            _kill(proc)
            proc.wait()
            break
        try:
            proc.wait(0.05)
        except subprocess.TimeoutExpired:
            pass
    for t in threads:
        t.join(2)
    rc = proc.returncode
    signalled = rc < 0 or rc > 128  # bwrap reports a child killed by signal N as 128 + N
    if timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        status = RunStatus.TIME_LIMIT  # wall clock, or the CPU-seconds limit
    elif overflow.is_set() or signalled:
        status = RunStatus.ERROR
    else:
        status = RunStatus.FINISHED
    err = chunks["err"].decode(errors="replace")
    if overflow.is_set():
        err += f"\n[output truncated at {cap} bytes; program stopped]"
    return CommandResult(status=status, execution_time=time.monotonic() - started, return_code=rc,
                         stdout=chunks["out"].decode(errors="replace"), stderr=err)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
