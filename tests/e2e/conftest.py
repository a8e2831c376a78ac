"""End-to-end helpers: run `slime-rl train` as a real subprocess (its own Ray, Redis, engines) on a tiny model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLIME = str(Path(sys.executable).parent / "slime-rl")


def tiny_overrides(model: Path, run_dir: Path, **extra: object) -> list[str]:
    base = {
        "model.path": str(model), "run_dir": str(run_dir), "dashboard.enabled": "false",
        "trainer.max_steps": 3, "trainer.lr": 1e-4, "rollout.group_size": 2, "rollout.groups_per_step": 2,
        "rollout.sampling.max_new_tokens": 8, "engines.num_engines": 1, "eval_samples": 4,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_train(args: list[str], timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run([SLIME, "train", *args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def math_config() -> str:
    return str(REPO / "examples" / "math" / "config.yaml")
