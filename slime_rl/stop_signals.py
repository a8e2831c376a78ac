"""How a run stops on SIGTERM and SIGINT: in order if it can, at once if it cannot.

The default SIGTERM action ends the process without running `finally` blocks; raising instead lets the run's
ExitStack stop everything in reverse order (Redis flushed, engines and actors stopped), wherever the main thread is
blocked (ray.get polls for signals; sleeps, waits and sockets are interrupted). That orderly stop may itself hang on a
stuck component, so it has a deadline: after `grace` seconds, or on a second signal, the process exits at once, and
what it started dies with it (parent-death signal, `reaper`).
"""

from __future__ import annotations

import os
import signal
import threading

STOP_GRACE_S = 60.0


class _StopOnSignal:
    def __init__(self, grace: float):
        self.grace = grace
        self.stopping = False

    def __call__(self, signum: int, frame) -> None:
        code = 128 + signum
        if self.stopping:  # asked twice: do not wait for the orderly stop
            os._exit(code)
        self.stopping = True
        timer = threading.Timer(self.grace, os._exit, (code,))
        timer.daemon = True  # a stop that finishes in time exits without waiting for it
        timer.start()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(code)


def stop_on_signals(grace: float = STOP_GRACE_S) -> None:
    """Install the handlers for SIGTERM and SIGINT (main thread only, as Python requires)."""
    handler = _StopOnSignal(grace)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
