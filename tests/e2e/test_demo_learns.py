"""The demo's promise, on the real model: the reward goes up within its first steps (slow, run in CI)."""
from __future__ import annotations

import json

import pytest

from e2e_helpers import read_summary, run_train


@pytest.mark.slow
def test_demo_reward_improves_over_its_first_steps(math_config, real_model_path, tmp_path):
    run_dir = tmp_path / "demo"
    proc = run_train([math_config, f"run_dir={run_dir}", "trainer.max_steps=12", "trainer.checkpoint_every=0",
                      "eval_samples=32", "dashboard.enabled=false"], timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward_mean"] for r in records if r["kind"] == "trainer" and r.get("stepped")]
    assert len(rewards) == 12
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.1, f"training reward did not improve: first steps {rewards[:5]}, last {rewards[-5:]}"
    summary = read_summary(run_dir)
    assert summary["weight_pushes"] == 12 and summary["final_version"] == 12
    assert (run_dir / "tensorboard").is_dir() and (run_dir / "logs" / "actors").exists()
