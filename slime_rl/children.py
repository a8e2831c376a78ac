"""Forked children that die with the process that forked them.

Megatron's checkpoint writer forks worker processes from the trainer. A fork inherits every open descriptor,
Ray's connection to its raylet included: if the trainer is killed while such a worker is alive, the worker keeps
that connection open, Ray never learns that the actor died, and the driver waits on it forever (and the worker,
its queue peer gone, blocks forever too). Linux's parent-death signal ends the worker with its parent.

The launcher's own children (the embedded redis-server, the CPU engines) are started with `spawn`: they get the
same signal, so they cannot outlive the launcher however it ends, SIGKILL included (no handler of ours runs then).
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Any

_PR_SET_PDEATHSIG = 1
_prctl = None  # resolved once in the parent: a child forked from a threaded process must not dlopen
_forking_pid = 0  # set in the parent just before each fork, read in the child
_fork_hooks = False  # die_with_parent_on_fork registered its fork hooks


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _in_child() -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _forking_pid:  # the parent died between fork and prctl: nothing would signal us
        os._exit(1)


def die_with_parent_on_fork() -> bool:
    """From now on every os.fork() child of this process gets SIGKILL when this process dies (once per process;
    Linux only: elsewhere a no-op that returns False). The signal follows the forking thread, so fork from
    threads that live as long as the process (Megatron forks from the actor's main thread)."""
    global _fork_hooks
    if not _resolve_prctl():
        return False
    if not _fork_hooks:
        os.register_at_fork(before=_before_fork, after_in_child=_in_child)
        _fork_hooks = True
    return True


def _resolve_prctl() -> bool:
    global _prctl
    if not sys.platform.startswith("linux"):
        return False
    if _prctl is None:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    return True


class _Spawner:
    """One thread, alive as long as the process, that forks every `spawn` child.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process. Children are started from
    short-lived threads too (the run's supervisor restarts a dead engine or Redis and ends with the run; a test's
    helper thread), so forking from the caller's thread would kill a child when that thread ends. This thread ends
    only with the process (a daemon blocked on its queue), so the signal comes exactly when the process dies."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # a fork of this process has no such thread: it makes its own
        self.jobs: queue.SimpleQueue[tuple[Any, Future]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="child-spawner", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            make, done = self.jobs.get()
            try:
                done.set_result(make())
            except BaseException as exc:  # handed to the caller, which raises it
                done.set_exception(exc)

    def call(self, make) -> subprocess.Popen:
        if threading.current_thread() is self.thread:
            return make()
        done: Future = Future()
        self.jobs.put((make, done))
        return done.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def spawn(argv: list[str], death_signal: int = signal.SIGKILL, **popen_kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen(argv, **popen_kwargs)` whose child receives `death_signal` when this process dies, by any
    signal or exit (Linux; elsewhere a plain Popen). SIGTERM suits a child that must flush on the way out (Redis's
    AOF); SIGKILL one that could hang in a graceful shutdown."""
    global _spawner
    if not _resolve_prctl():
        return subprocess.Popen(argv, **popen_kwargs)
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():
            _spawner = _Spawner()
    parent = os.getpid()

    def in_child() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nothing would signal us
            os._exit(1)

    return _spawner.call(lambda: subprocess.Popen(argv, preexec_fn=in_child, **popen_kwargs))
