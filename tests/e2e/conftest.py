import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from e2e_helpers import REPO

from slime_rl.net import free_port, wait_for_port

BIN = Path(sys.executable).parent


@pytest.fixture
def math_config() -> str:
    return str(REPO / "examples" / "math" / "config.yaml")


@pytest.fixture
def ray_head():
    """A real `ray start --head` (its own free ports, temp dir and auth token), stopped by PID. Its Ray temp dir is
    RAY_TMPDIR/ray, so a process given that RAY_TMPDIR sees it as the machine's current cluster, as a default
    `ray start --head` is seen from /tmp/ray."""
    tmpdir = Path(tempfile.mkdtemp(prefix="rayh", dir="/tmp"))  # short: Ray's socket paths are length-limited
    token = tmpdir / "token"
    token.write_text(secrets.token_hex(32))
    gcs_port, dash_port = free_port(), free_port()
    # started as the README starts it: venv activated (a job's driver finds `slime-rl` on this PATH), niceness 0
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(BIN.parent),
        "RAY_worker_niceness": "0",
    }
    env.pop("RAY_ADDRESS", None)
    # every listening port chosen free: Ray's fixed defaults (agent 52365, metrics) clash with any other Ray on the
    # machine, and an agent that cannot bind disables job submission
    agent_ports = [
        arg
        for flag in (
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        )
        for arg in (flag, str(free_port()))
    ]
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(gcs_port),
            "--num-cpus",
            "4",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dash_port),
            "--include-dashboard",
            "true",
            *agent_ports,
            "--temp-dir",
            str(tmpdir / "ray"),
        ],
        env=env,
        stdout=open(tmpdir / "head.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", dash_port, timeout=120)
        deadline = time.monotonic() + 120
        while not (tmpdir / "ray" / "ray_current_cluster").exists():  # written once `ray start` has finished
            assert head.poll() is None and time.monotonic() < deadline, (tmpdir / "head.log").read_text()[-3000:]
            time.sleep(0.2)
        yield {
            "address": f"http://127.0.0.1:{dash_port}",
            "gcs_port": gcs_port,
            "env": env,
            "tmpdir": tmpdir,
            "proc": head,
        }
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started on SIGTERM
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(tmpdir, ignore_errors=True)
