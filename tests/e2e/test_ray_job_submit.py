"""`ray job submit` against a Ray head this test starts (its own ports, temp dir and auth token), stopped by PID."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from slime_rl.net import free_port, wait_for_port

from e2e_helpers import REPO, tiny_overrides

BIN = Path(sys.executable).parent


@pytest.fixture
def ray_head():
    temp = Path(tempfile.mkdtemp(prefix="rayh", dir="/tmp"))  # short: Ray's socket paths are length-limited
    token = temp / "token"
    token.write_text(secrets.token_hex(32))
    gcs_port, dash_port = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    # every listening port chosen free: Ray's fixed defaults (agent 52365, metrics) clash with any other Ray on the
    # machine, and an agent that cannot bind disables job submission
    agent_ports = [arg for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                    "--runtime-env-agent-port", "--metrics-export-port")
                   for arg in (flag, str(free_port()))]
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs_port), "--num-cpus", "4",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port), "--include-dashboard", "true",
         *agent_ports, "--temp-dir", str(temp)],
        env=env, stdout=open(temp / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port("127.0.0.1", dash_port, timeout=120)
        yield {"address": f"http://127.0.0.1:{dash_port}", "env": env, "temp": temp}
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started on SIGTERM
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


@pytest.mark.slow
def test_ray_job_submit_runs_a_short_training_to_success(ray_head, tiny_model_path, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["address"], "--working-dir", str(REPO),
           "--", "slime-rl", "train", "examples/math/config.yaml",
           *tiny_overrides(tiny_model_path, run_dir, **{"trainer.max_steps": 2})]
    started = time.time()
    for _ in range(60):
        proc = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        if "No available agent to submit job" not in out:
            break
        time.sleep(2)  # the head's job agent starts after its dashboard port opens (slowly on a busy machine)
    assert proc.returncode == 0, out[-4000:]
    assert "succeeded" in out, out[-4000:]
    summary_file = run_dir / "summary.json"
    assert summary_file.exists(), out[-4000:]
    assert summary_file.stat().st_mtime > started
    import json

    summary = json.loads(summary_file.read_text())
    assert summary["steps"] == 2 and summary["final_version"] == 2
