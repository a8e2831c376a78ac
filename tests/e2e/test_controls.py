"""Dashboard control actions reach a running job: pause rollouts, resume, checkpoint (token required)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from e2e_helpers import dashboard_url, read_summary, start_train, tiny_overrides, wait_for_step


@pytest.mark.slow
def test_pause_resume_and_checkpoint_from_the_dashboard(math_config, tiny_model_path, tmp_path):
    run_dir = tmp_path / "run"
    # 12 steps: paused after step 1-3, the trainer can run at most tau + 1 = 3 steps ahead on what is already in
    # the buffer, so the run cannot finish (and take the dashboard down) before it is resumed
    args = [
        math_config,
        *tiny_overrides(
            tiny_model_path, run_dir, **{"trainer.max_steps": 12, "dashboard.enabled": "true", "dashboard.token": "tok"}
        ),
    ]
    proc = start_train(args, tmp_path / "run.log")
    try:
        wait_for_step(run_dir, 1, proc)
        url = dashboard_url(tmp_path / "run.log")
        assert httpx.post(f"{url}api/control/pause_rollout").status_code == 401
        auth = {"Authorization": "Bearer tok"}
        assert httpx.post(f"{url}api/control/pause_rollout", headers=auth).status_code == 200
        assert httpx.post(f"{url}api/control/checkpoint", headers=auth).status_code == 200
        # paused once the pause is recorded (the workers have stopped by then); the trainer then drains what the
        # buffer held until less than a step is left
        wait_until(lambda: control_actions(run_dir) == ["pause_rollout", "checkpoint"] and drained(run_dir), proc)
        assert httpx.post(f"{url}api/control/resume_rollout", headers=auth).status_code == 200
        assert proc.wait(600) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_summary(run_dir)["final_version"] == 12
    assert control_actions(run_dir) == ["pause_rollout", "checkpoint", "resume_rollout"]
    kinds = [r["kind"] if r["kind"] != "control" else r["action"] for r in records(run_dir)]
    paused = kinds[kinds.index("pause_rollout") : kinds.index("resume_rollout")]
    assert "rollout" not in paused and "trainer" in kinds[kinds.index("resume_rollout") :]  # nothing produced
    assert (run_dir / "checkpoints" / "latest").exists()


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def control_actions(run_dir) -> list[str]:
    return [r["action"] for r in records(run_dir) if r["kind"] == "control"]


def drained(run_dir) -> bool:
    buffer = [r for r in records(run_dir) if r["kind"] == "buffer"]
    # entries never handed to the trainer (depth counts the pending ones too: trained, not yet checkpointed)
    return bool(buffer) and buffer[-1]["depth"] - buffer[-1]["pending"] < 2  # groups_per_step in tiny_overrides


def wait_until(condition, proc, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)
