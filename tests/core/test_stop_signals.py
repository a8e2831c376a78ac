"""SIGTERM and SIGINT stop a process in order (its `finally` runs), and still stop it when that orderly stop hangs:
after the grace period, or at once on a second signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CHILD = textwrap.dedent("""
    import sys, time
    from slime_rl.stop_signals import stop_on_signals
    stop_on_signals(grace=float(sys.argv[2]))
    marker = sys.argv[1]
    open(marker, "w").write("blocked")
    try:
        time.sleep(600)            # the run, blocked
    finally:
        open(marker, "w").write("stopping")
        if sys.argv[3] == "hang":
            time.sleep(600)        # a cleanup that never finishes
""")


def _stop(tmp_path: Path, sig: int, grace: float, cleanup: str, second_signal: bool = False) -> tuple[int, float, str]:
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), str(grace), cleanup])
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, "the child never started"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(sig)
        if second_signal:
            while marker.read_text() != "stopping":
                assert time.monotonic() - sent < 10, "the first signal did not reach the cleanup"
                time.sleep(0.05)
            proc.send_signal(sig)
        code = proc.wait(30)
        return code, time.monotonic() - sent, marker.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_runs_the_cleanup(tmp_path, sig):
    code, took, marker = _stop(tmp_path, sig, grace=60, cleanup="ok")
    assert marker == "stopping" and took < 10
    assert code != 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_hung_cleanup_ends_after_the_grace_period(tmp_path, sig):
    code, took, marker = _stop(tmp_path, sig, grace=2, cleanup="hang")
    assert marker == "stopping"
    assert code == 128 + sig and 1.5 < took < 15


def test_a_second_signal_ends_a_hung_cleanup_at_once(tmp_path):
    code, took, _ = _stop(tmp_path, signal.SIGTERM, grace=60, cleanup="hang", second_signal=True)
    assert code == 128 + signal.SIGTERM and took < 15
