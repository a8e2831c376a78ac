"""Nothing a run started outlives its launcher, whichever signal ends it: the embedded redis-server, the engines,
Ray's processes (gcs_server, raylet, agents, the actors' workers) and the run's own helpers. A fresh run also writes
RUN_DIR/logs/launcher.log."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from e2e_helpers import start_train, tiny_overrides, wait_for_step
from proc_helpers import alive, descendants, wait_gone

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def started_by(launcher: int, run_dir: Path) -> dict[int, str]:
    """What the launcher started, each with what it is: the run's pid files, the launcher's descendants, and every
    process that names the run's Ray session (its actors' log link points into that session)."""
    found = {int((run_dir / "pids" / name).read_text()): name for name in os.listdir(run_dir / "pids")}
    found.update({pid: _cmdline(pid) for pid in descendants(launcher) if pid not in found})
    session = Path(os.readlink(run_dir / "logs" / "actors")).parent.name
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid not in found and session in _cmdline(pid):
            found[pid] = _cmdline(pid)
    return {pid: what for pid, what in found.items() if alive(pid)}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_nothing_outlives_the_launcher(math_config, tiny_model_path, tmp_path, sig):
    run_dir = tmp_path / "run"
    args = [math_config, *tiny_overrides(tiny_model_path, run_dir, **{"trainer.max_steps": 1000})]
    proc = start_train(args, tmp_path / "run.log")
    started: dict[int, str] = {}
    try:
        wait_for_step(run_dir, 1, proc)  # Redis, Ray, the engine, trainer and workers are all up and working
        started = started_by(proc.pid, run_dir)
        names = " ".join(started.values())
        for part in ("redis", "engine-0", "trainer-0", "raylet", "gcs_server"):
            assert part in names, f"{part} not found among {sorted(started.values())}"
        proc.send_signal(sig)
        proc.wait(120)
        left = wait_gone(list(started), 30)
        assert not left, "outlived the launcher: " + "; ".join(f"{p} {started[p]}" for p in left)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in started:  # only what this run started, and only if the test failed to see it stop
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    log = (run_dir / "logs" / "launcher.log").read_text()
    assert "embedded redis-server at" in log
