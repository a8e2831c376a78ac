"""Forked children that die with the process that forked them.

Megatron's checkpoint writer forks worker processes from the trainer. A fork inherits every open descriptor,
Ray's connection to its raylet included: if the trainer is killed while such a worker is alive, the worker keeps
that connection open, Ray never learns that the actor died, and the driver waits on it forever (and the worker,
its queue peer gone, blocks forever too). Linux's parent-death signal ends the worker with its parent.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_prctl = None  # resolved once in the parent: a child forked from a threaded process must not dlopen
_forking_pid = 0  # set in the parent just before each fork, read in the child


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
    global _prctl
    if not sys.platform.startswith("linux"):
        return False
    if _prctl is None:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
        os.register_at_fork(before=_before_fork, after_in_child=_in_child)
    return True
