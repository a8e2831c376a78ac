"""Kill parts of a running job and check that it recovers, with no trajectory trained twice and none lost."""

from __future__ import annotations

import os
import signal
import time

import pytest
from e2e_helpers import audit, pid_of, read_summary, run_train, start_train, tiny_overrides, wait_for_step
from proc_helpers import alive, forked_children


@pytest.mark.slow
def test_killed_trainer_resumes_from_checkpoint_exactly_once(math_config, tiny_model_path, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        math_config,
        *tiny_overrides(
            tiny_model_path, run_dir, **{"trainer.max_steps": 6, "trainer.checkpoint_every": 2, "buffer.high_water": 64}
        ),
    ]
    proc = start_train(args, tmp_path / "first.log")
    try:
        wait_for_step(run_dir, 3, proc)  # step 3 is trained but not yet checkpointed
        os.kill(pid_of(run_dir, "trainer-0"), signal.SIGKILL)
        assert proc.wait(300) != 0  # the run stops, and cleans up what it started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [a["step"] for a in audit(run_dir)] == [2]
    assert_resumes_exactly_once(run_dir, math_config, steps=6)


def assert_resumes_exactly_once(run_dir, math_config, steps: int) -> None:
    resumed = run_train(["--resume", str(run_dir), math_config])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["final_version"] == steps
    records = audit(run_dir)
    ids = [i for rec in records for i in rec["ids"]]
    assert len(ids) == len(set(ids)), "a trajectory was trained twice"
    assert records[-1]["step"] == steps
    buf = summary["buffer"]
    assert buf["pending"] == 0
    assert buf["produced"] == buf["consumed"] + buf["dead_lettered"] + buf["duplicates"] + buf["depth"]


@pytest.mark.slow
def test_trainer_killed_while_writing_a_checkpoint_stops_the_run_and_resumes(math_config, tiny_model_path, tmp_path):
    """Killed while Megatron's forked writers are saving: the writers die with it (they hold Ray's connection:
    alive, the run would wait forever for a trainer Ray thinks is alive), the half-written step is ignored."""
    run_dir, steps = tmp_path / "run", 40
    args = [
        math_config,
        *tiny_overrides(
            tiny_model_path,
            run_dir,
            **{"trainer.max_steps": steps, "trainer.checkpoint_every": 1, "buffer.high_water": 64},
        ),
    ]
    proc = start_train(args, tmp_path / "first.log")
    try:
        wait_for_step(run_dir, 1, proc)
        trainer = pid_of(run_dir, "trainer-0")
        deadline = time.monotonic() + 300
        while not (writers := forked_children(trainer)):  # no sleep: a writer lives for tens of milliseconds
            assert proc.poll() is None and time.monotonic() < deadline, "never saw a checkpoint writer process"
        os.kill(trainer, signal.SIGKILL)
        assert proc.wait(120) != 0
        assert not [w for w in writers if alive(w)], "a checkpoint writer outlived the trainer"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_resumes_exactly_once(run_dir, math_config, steps=steps)


@pytest.mark.slow
def test_killed_engine_worker_and_redis_are_restarted(math_config, tiny_model_path, tmp_path):
    run_dir = tmp_path / "run"
    args = [math_config, *tiny_overrides(tiny_model_path, run_dir, **{"trainer.max_steps": 7})]
    proc = start_train(args, tmp_path / "run.log")
    try:
        wait_for_step(run_dir, 1, proc)
        os.kill(pid_of(run_dir, "engine-0"), signal.SIGKILL)
        wait_for_step(run_dir, 3, proc)
        os.kill(pid_of(run_dir, "rollout-0"), signal.SIGKILL)
        wait_for_step(run_dir, 5, proc)
        os.kill(pid_of(run_dir, "redis"), signal.SIGKILL)
        assert proc.wait(600) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    s = read_summary(run_dir)
    assert s["steps"] == 7 and s["final_version"] == 7
    assert s["restarts"].get("engine-0", 0) >= 1
    assert s["restarts"].get("rollout-worker", 0) >= 1
    assert s["restarts"].get("redis", 0) >= 1
    buf = s["buffer"]
    assert buf["produced"] == buf["consumed"] + buf["dead_lettered"] + buf["duplicates"] + buf["depth"]
