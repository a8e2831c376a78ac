"""A run that cannot make progress stops with a non-zero exit and a message naming the cause, in both modes, instead
of waiting in silence (the old code waited 10 minutes in async mode and for ever in sync mode)."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import run_train, tiny_overrides

ENVS = str(Path(__file__).parent)  # stall_envs.py, importable by the run's Ray actors through PYTHONPATH
STALLED = 3  # slime_rl.launcher.STALLED_EXIT


def stalled_run(tmp_path: Path, tiny_model_path: Path, config: str, **extra: object):
    run_dir = tmp_path / "run"
    proc = run_train(
        [config, *tiny_overrides(tiny_model_path, run_dir, **{"trainer.max_steps": 4, **extra})],
        timeout=420,
        env={"PYTHONPATH": ENVS},
    )
    return proc, proc.stdout + proc.stderr


def never_reward_config(tmp_path: Path) -> str:
    path = tmp_path / "never-reward.yaml"
    path.write_text("name: never-reward\nenv:\n  name: stall_envs:NeverRewardEnv\n  max_turns: 1\n")
    return str(path)


@pytest.mark.slow
def test_async_env_without_reward_stops_after_untrainable_batches_naming_max_turns(tmp_path, tiny_model_path):
    proc, out = stalled_run(
        tmp_path,
        tiny_model_path,
        never_reward_config(tmp_path),
        **{"rollout.staleness_tau": 2, "watchdog.max_untrainable_batches": 2},
    )
    assert proc.returncode == STALLED, out[-4000:]
    assert "2 batches in a row held no trainable group" in out, out[-4000:]
    assert "8/8 samples failed: EnvError: the episode was cut at env.max_turns=1" in out, out[-4000:]
    assert "set env.max_turns" in out and "held no trainable group (1/2 before the run stops)" in out, out[-4000:]
    assert "stopped: " in (tmp_path / "run" / "logs" / "launcher.log").read_text()


@pytest.mark.slow
def test_sync_reward_function_that_raises_stops_the_run_with_its_message(tmp_path, tiny_model_path, math_config):
    proc, out = stalled_run(
        tmp_path,
        tiny_model_path,
        math_config,
        **{"mode": "sync", "env.reward_fn": "stall_envs:raising_reward", "watchdog.max_untrainable_batches": 2},
    )
    assert proc.returncode == STALLED, out[-4000:]
    assert "samples failed: ConnectionError: reward service at 10.0.0.7:8000 refused the connection" in out, out[-4000:]


@pytest.mark.slow
def test_silence_behind_a_trainer_that_cannot_step_names_the_waiting_workers(tmp_path, tiny_model_path):
    # tau 0: the workers may start one step's groups; those fail, the trainer cannot step, nothing else comes
    proc, out = stalled_run(
        tmp_path,
        tiny_model_path,
        never_reward_config(tmp_path),
        **{"rollout.staleness_tau": 0, "watchdog.max_untrainable_batches": 5, "watchdog.max_silence_s": 8},
    )
    assert proc.returncode == STALLED, out[-4000:]
    assert "no trajectory reached the trainer for" in out and "max_silence_s=8" in out, out[-4000:]
    assert "1/1 waiting at their staleness capacity" in out, out[-4000:]
    assert "The last 1 batches held no trainable group: 4/4 samples failed: EnvError" in out, out[-4000:]
