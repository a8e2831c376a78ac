"""After a kill and `--resume`, the run goes on through its prompts where it stopped: no prompt of the epoch is
skipped and none is used twice.

Both runs are made deterministic so the check can be exact: every step consumes the next `groups_per_step` prompts
of the shuffled order (block j = positions (j-1)*gps .. j*gps-1), which is what a run that is never interrupted does.
sync: rollout.over_provision=1, so each step pushes exactly the groups it started and no long tail is carried over.
async: rollout.staleness_tau=0, so a worker may run one step ahead only, and the trainer's FIFO read takes exactly
the next block; the groups of a block still run side by side and finish in any order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from e2e_helpers import audit, pid_of, read_summary, run_train, start_train, tiny_overrides, wait_for_step

from slime_rl.rollout.dataset import PromptDataset

SEED, GPS = 3, 2


def write_prompts(path, n: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"id": f"p{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def expected_blocks(rows: list[dict], steps: int) -> list[set[int]]:
    """The row indices each step of an uninterrupted run consumes (one shared order, whatever the worker count)."""
    order = PromptDataset(rows, 0, 1, shuffle=True, seed=SEED)
    return [{order.at(k)[0] for k in range(j * GPS, (j + 1) * GPS)} for j in range(steps)]


def consumed_blocks(run_dir) -> list[set[int]]:
    """The prompts the committed steps consumed, in the order the trainer read them, one set per step."""
    prompts = [p for rec in audit(run_dir) for p in rec["prompts"]]
    return [set(prompts[i : i + GPS]) for i in range(0, len(prompts), GPS)]


def kill_trainer_then_resume(math_config, args, run_dir, log, kill_at: int, before_kill=None) -> str:
    """Kill the trainer once it reached `kill_at`, resume the run to its end; the resumed run's console output."""
    proc = start_train(args, log)
    try:
        if before_kill:
            before_kill(proc)
        wait_for_step(run_dir, kill_at, proc)
        os.kill(pid_of(run_dir, "trainer-0"), signal.SIGKILL)
        assert proc.wait(300) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    resumed = run_train(["--resume", str(run_dir), math_config])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return resumed.stdout


@pytest.mark.slow
def test_async_resume_neither_skips_nor_repeats_prompts(math_config, tiny_model_path, tmp_path):
    """One epoch of 16 prompts over 8 steps; the rollout worker is killed (Ray restarts it) and later the trainer
    (the run is resumed from the step-4 checkpoint and re-reads step 5's groups from the buffer)."""
    run_dir, steps = tmp_path / "run", 8
    rows = write_prompts(tmp_path / "prompts.jsonl", steps * GPS)
    args = [
        math_config,
        *tiny_overrides(
            tiny_model_path,
            run_dir,
            **{
                "env.dataset": tmp_path / "prompts.jsonl",
                "rollout.seed": SEED,
                "rollout.groups_per_step": GPS,
                "rollout.staleness_tau": 0,
                "trainer.max_steps": steps,
                "trainer.checkpoint_every": 4,
            },
        ),
    ]

    def kill_rollout_worker(proc) -> None:
        wait_for_step(run_dir, 2, proc)
        pid = pid_of(run_dir, "rollout-0")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while pid_of(run_dir, "rollout-0") == pid:  # Ray starts it again; it restores its place from the buffer
            assert proc.poll() is None and time.monotonic() < deadline, "the rollout worker was not restarted"
            time.sleep(0.2)

    resumed = kill_trainer_then_resume(math_config, args, run_dir, tmp_path / "first.log", 5, kill_rollout_worker)
    assert "engines hold the resumed policy version 4" in resumed
    assert read_summary(run_dir)["final_version"] == steps
    assert consumed_blocks(run_dir) == expected_blocks(rows, steps)  # every prompt of the epoch, once, in order


@pytest.mark.slow
def test_sync_resume_uses_the_prompts_an_uninterrupted_run_would(math_config, tiny_model_path, tmp_path):
    """Two rollout workers (each its own share of the order); the trainer is killed after step 3, the run resumes
    from the step-2 checkpoint, whose weights reach the engines before anything is sampled. staleness_tau is wide:
    the groups made for step 4 before the kill are still in the buffer and the first batch made after the resume is
    trained behind them; a tight tau would drop it as stale and consume more prompts than an uninterrupted run."""
    run_dir, steps = tmp_path / "run", 6
    rows = write_prompts(tmp_path / "prompts.jsonl", 20)
    args = [
        math_config,
        *tiny_overrides(
            tiny_model_path,
            run_dir,
            **{
                "mode": "sync",
                "env.dataset": tmp_path / "prompts.jsonl",
                "rollout.seed": SEED,
                "rollout.num_workers": 2,
                "rollout.groups_per_step": GPS,
                "rollout.over_provision": 1.0,
                "rollout.staleness_tau": 8,
                "trainer.max_steps": steps,
                "trainer.checkpoint_every": 2,
            },
        ),
    ]
    resumed = kill_trainer_then_resume(math_config, args, run_dir, tmp_path / "first.log", 3)
    assert "engines hold the resumed policy version 2" in resumed
    assert read_summary(run_dir)["final_version"] == steps
    assert consumed_blocks(run_dir) == expected_blocks(rows, steps)
