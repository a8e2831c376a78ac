"""A forked child dies with the process that forked it once die_with_parent_on_fork is on (and, without it, lives
on: the failure the trainer had when killed during a checkpoint, with Megatron's forked writers keeping Ray's
connection open)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from proc_helpers import alive, wait_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")

PARENT = textwrap.dedent("""
    import os, sys, time
    from slime_rl.children import die_with_parent_on_fork
    if sys.argv[1] == "on":
        assert die_with_parent_on_fork()
    pid = os.fork()
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    open(sys.argv[2], "w").write(str(pid))
    time.sleep(120)
""")


def _child_after_parent_killed(tmp_path: Path, mode: str) -> tuple[int, bool]:
    pid_file = tmp_path / f"child-{mode}"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode, str(pid_file)])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the parent never forked"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        return child, alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_forked_child_dies_with_its_parent(tmp_path):
    _, alive = _child_after_parent_killed(tmp_path, "on")
    assert not alive


def test_without_it_a_forked_child_outlives_its_parent(tmp_path):
    child, alive = _child_after_parent_killed(tmp_path, "off")
    try:
        assert alive
    finally:
        if alive:
            os.kill(child, signal.SIGKILL)


SPAWNER = textwrap.dedent("""
    import signal, subprocess, sys, threading, time
    from slime_rl.children import spawn
    box = {}
    # from a thread that ends at once: the parent-death signal must follow the process, not this thread
    t = threading.Thread(target=lambda: box.update(proc=spawn(["sleep", "120"], death_signal=signal.SIGTERM)))
    t.start(); t.join()
    open(sys.argv[1], "w").write(str(box["proc"].pid))
    time.sleep(120)
""")


def test_spawned_child_outlives_the_thread_that_started_it_but_not_the_process(tmp_path):
    pid_file = tmp_path / "spawned"
    parent = subprocess.Popen([sys.executable, "-c", SPAWNER, str(pid_file)])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline and parent.poll() is None, "the parent never spawned"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        time.sleep(0.5)
        assert alive(child), "the child died with the thread that started it"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert not wait_gone([child], 5), "the spawned child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
