"""End-to-end helpers (imported by the e2e tests): run `slime-rl train` as a real subprocess (its own Ray, Redis,
engines) on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SLIME = str(Path(sys.executable).parent / "slime-rl")


def tiny_overrides(model: Path, run_dir: Path, **extra: object) -> list[str]:
    base = {
        "model.path": str(model),
        "run_dir": str(run_dir),
        "dashboard.enabled": "false",
        "trainer.max_steps": 3,
        "trainer.lr": 1e-4,
        "rollout.group_size": 2,
        "rollout.groups_per_step": 2,
        "rollout.sampling.max_new_tokens": 8,
        "engines.num_engines": 1,
        "eval_samples": 4,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_train(args: list[str], timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [SLIME, "train", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def start_train(args: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [SLIME, "train", *args], cwd=REPO, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT
    )


def trainer_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if '"kind": "trainer"' in line]
    return max(steps, default=0)


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    import time

    deadline = time.monotonic() + timeout
    while trainer_steps(run_dir) < step:
        assert proc.poll() is None, f"training exited early with {proc.returncode}"
        assert time.monotonic() < deadline, f"trainer did not reach step {step}"
        time.sleep(0.2)


def pid_of(run_dir: Path, name: str) -> int:
    return int((run_dir / "pids" / name).read_text())


def audit(run_dir: Path) -> list[dict]:
    """The trainer's commit records (trained_ids.jsonl): step, version, trajectory ids, prompts of the groups."""
    return [json.loads(line) for line in (run_dir / "trained_ids.jsonl").read_text().splitlines()]


def dashboard_url(log_path: Path) -> str:
    """The dashboard URL a run printed at start."""
    return next(
        line.split("dashboard: ")[1].strip() for line in log_path.read_text().splitlines() if "dashboard: " in line
    )


def metrics_records(run_dir: Path, kind: str | None = None) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if kind is None or r["kind"] == kind]
