"""The README's cluster commands, run as written: its venv activation and its `ray job submit` line verbatim (only
the head's address is the test head's, and `trainer.max_steps` and `run_dir` are appended), against a head started
as the README starts it (venv activated) but on free ports, with the real model the example config names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import REPO

BIN = Path(sys.executable).parent
README_ADDRESS = "http://127.0.0.1:8265"


def readme_cluster_block() -> list[str]:
    """The command lines of the README's `ray job submit` code block."""
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S):
        if "ray job submit" in block:
            return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    raise AssertionError("the README has no `ray job submit` block")


@pytest.mark.slow
def test_readme_job_submit_trains_the_real_model(ray_head, real_model_path, tmp_path):
    lines = readme_cluster_block()
    activate = next(line for line in lines if line.startswith("source "))
    assert lines.index(activate) < next(i for i, line in enumerate(lines) if " ray start " in f" {line} ")
    submit = next(line for line in lines if line.startswith("ray job submit"))
    assert README_ADDRESS in submit
    run_dir = tmp_path / "run"
    command = (
        f"{activate.split('#')[0].strip()} && {submit.replace(README_ADDRESS, ray_head['address'])} "
        f"trainer.max_steps=2 run_dir={run_dir}"
    )
    # the client's shell as a new user's: the venv is not on its PATH until the README's own line activates it
    env = {**ray_head["env"], "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != str(BIN))}
    env.pop("VIRTUAL_ENV", None)
    started = time.time()
    for _ in range(60):
        proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
        out = proc.stdout + proc.stderr
        if "No available agent to submit job" not in out:
            break
        time.sleep(2)  # the head's job agent starts after its dashboard port opens (slowly on a busy machine)
    assert proc.returncode == 0, out[-4000:]
    assert "succeeded" in out, out[-4000:]
    summary_file = run_dir / "summary.json"
    assert summary_file.exists() and summary_file.stat().st_mtime > started, out[-4000:]
    summary = json.loads(summary_file.read_text())
    assert summary["steps"] == 2 and summary["final_version"] == 2
    snapshot = (run_dir / "config.yaml").read_text()
    assert f"path: {real_model_path}" in snapshot, "the job did not train the model the config names"
