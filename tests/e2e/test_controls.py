"""Dashboard control actions reach a running job: pause rollouts, resume, checkpoint (token required)."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from e2e_helpers import dashboard_url, read_summary, start_train, tiny_overrides, trainer_steps, wait_for_step


@pytest.mark.slow
def test_pause_resume_and_checkpoint_from_the_dashboard(math_config, tiny_model_path, tmp_path):
    run_dir = tmp_path / "run"
    # 12 steps: paused after step 1-3, the trainer can run at most tau + 1 = 3 steps ahead on what is already in
    # the buffer, so the run cannot finish (and take the dashboard down) before it is resumed
    args = [math_config, *tiny_overrides(tiny_model_path, run_dir, **{
        "trainer.max_steps": 12, "dashboard.enabled": "true", "dashboard.token": "tok"})]
    proc = start_train(args, tmp_path / "run.log")
    try:
        wait_for_step(run_dir, 1, proc)
        url = dashboard_url(tmp_path / "run.log")
        assert httpx.post(f"{url}api/control/pause_rollout").status_code == 401
        auth = {"Authorization": "Bearer tok"}
        assert httpx.post(f"{url}api/control/pause_rollout", headers=auth).status_code == 200
        assert httpx.post(f"{url}api/control/checkpoint", headers=auth).status_code == 200
        time.sleep(8)
        paused_at = trainer_steps(run_dir)
        time.sleep(6)
        assert trainer_steps(run_dir) <= paused_at + 1  # at most what was already in the buffer
        assert httpx.post(f"{url}api/control/resume_rollout", headers=auth).status_code == 200
        assert proc.wait(600) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_summary(run_dir)["final_version"] == 12
    actions = [json.loads(line)["action"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if '"kind": "control"' in line]
    assert actions == ["pause_rollout", "checkpoint", "resume_rollout"]
    assert (run_dir / "checkpoints" / "latest").exists()
