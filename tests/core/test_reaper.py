"""A guarded process's descendants end with it even when they were reparented to init (as Ray's agents are when
their raylet dies), and without the guard such a process lives on: the control shows the test can fail."""

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

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from slime_rl.reaper import guard
    if sys.argv[1] == "on":
        guard()
    # a daemon: its own session, its parent (sh) gone at once, so it is init's child and no signal of ours reaches it
    subprocess.run(["sh", "-c", "setsid sleep 120 >/dev/null 2>&1 & echo $! > " + sys.argv[2]], check=True)
    time.sleep(120)
""")


def _orphan_after_parent_killed(tmp_path: Path, mode: str, wait: float) -> tuple[int, bool]:
    pid_file = tmp_path / f"orphan-{mode}"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode, str(pid_file)])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline and parent.poll() is None, "the parent never started its daemon"
            time.sleep(0.05)
        orphan = int(pid_file.read_text())
        assert alive(orphan)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        return orphan, bool(wait_gone([orphan], wait))
    finally:
        if parent.poll() is None:
            parent.kill()


def test_reaper_stops_what_the_killed_process_left_behind(tmp_path):
    _, left = _orphan_after_parent_killed(tmp_path, "on", wait=15)
    assert not left


def test_without_the_guard_the_daemon_outlives_its_parent(tmp_path):
    orphan, left = _orphan_after_parent_killed(tmp_path, "off", wait=3)
    try:
        assert left
    finally:
        if alive(orphan):
            os.kill(orphan, signal.SIGKILL)
