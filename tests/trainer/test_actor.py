"""TrainerCore against a real Redis buffer: groups are trained and acknowledged (stale ones acknowledged as
dropped), metrics are logged; a trainer SIGKILLed before its step commits leaves the entries pending and a new
trainer with the same consumer name trains them exactly once; the Ray actor wrapper."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time

import pytest
import torch
from trainer_helpers import group, on_policy_group, run_trainer_until_killed

from slime_rl.buffer import TrajectoryBuffer
from slime_rl.config import RunConfig
from slime_rl.results import PushReceipt, StepState
from slime_rl.run_keys import RunKeys
from slime_rl.staleness import PolicyVersion
from slime_rl.trainer.actor import TrainerActor, TrainerCore
from slime_rl.trainer.parallel import init_parallel


@pytest.fixture(scope="module")
def parallel():
    torch.set_num_threads(2)
    init_parallel()


def config(tiny_model_path, **trainer) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"path": str(tiny_model_path)},
            "rollout": {"groups_per_step": 2, "group_size": 4, "staleness_tau": 0},
            "trainer": {"lr": 1e-3, "micro_batch_tokens": 64, "threads": 2, **trainer},
            "buffer": {"high_water": 64},
        }
    )


def records(run_dir, kind: str) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def test_groups_are_trained_then_acknowledged(parallel, redis_url, tmp_path, tiny_model_path):
    cfg = config(tiny_model_path)
    core = TrainerCore(cfg, redis_url, str(tmp_path), consumer="trainer-0")
    producer = TrajectoryBuffer(cfg.buffer, redis_url, consumer="producer", keys=RunKeys.of(cfg))
    first = [on_policy_group(core.policy, f"a{i}") for i in range(2)]
    producer.put_many(first)
    m = core.train_step(timeout_s=30)
    assert m.step == 1 and m.version == 1 and core.version() == 1 and m.state is StepState.TRAINED
    assert sorted(m.trained_ids) == sorted(t.id for g in first for t in g.trajectories) and m.dropped_ids == []
    assert producer.stats().pending == 0 and producer.stats().consumed == 2
    assert PolicyVersion(producer.r, RunKeys.of(cfg)).get() == 1
    assert all(producer.is_trained(t.id) for g in first for t in g.trajectories)

    fresh, stale = on_policy_group(core.policy, "fresh", version=1), on_policy_group(core.policy, "stale", version=0)
    producer.put_many([fresh, stale])
    m = core.train_step(timeout_s=30)
    assert m.version == 2 and m.batch.dropped_stale == 4 and m.batch.kept == 4
    assert sorted(m.dropped_ids) == sorted(t.id for t in stale.trajectories)
    stats = producer.stats()
    assert stats.pending == 0 and stats.consumed == 4 and stats.depth == 0  # the stale group was consumed too
    trainer = records(tmp_path, "trainer")
    assert [r["version"] for r in trainer] == [1, 2]
    assert trainer[1]["staleness_hist"] == {"0": 4, "1": 4}
    for key in (
        "loss",
        "masked_frac",
        "clip_frac",
        "logp_diff_mean",
        "tokens_per_s",
        "step_time_s",
        "grad_norm",
        "reward_mean",
        "kept",
        "dropped_stale",
        "padded",
    ):
        assert key in trainer[1], key
    assert records(tmp_path, "buffer")[-1]["consumed"] == 4
    nothing = core.train_step(timeout_s=0.5)  # nothing left
    assert nothing.state is StepState.NO_DATA_YET and nothing.batch is None and nothing.version == 2
    assert set(core.export_weights()) >= {"model.embed_tokens.weight", "model.norm.weight"}


def test_killed_before_commit_leaves_entries_pending_and_they_train_once(
    parallel, redis_url, tmp_path, tiny_model_path
):
    # checkpoint_every=2: a step commits (acknowledges) with the checkpoint that holds it, so after step 1 the
    # entries are trained into the child's weights but not committed when the child dies
    cfg = config(tiny_model_path, checkpoint_every=2)
    run_dir = tmp_path / "run"
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=run_trainer_until_killed, args=(cfg, redis_url, str(run_dir), "trainer-0"))
    child.start()
    try:
        producer = TrajectoryBuffer(cfg.buffer, redis_url, consumer="producer", keys=RunKeys.of(cfg))
        ref = TrainerCore(cfg, redis_url, str(tmp_path / "ref"), consumer="reference-only")  # for logprobs only
        groups = [on_policy_group(ref.policy, f"k{i}") for i in range(2)]
        producer.put_many(groups)
        deadline = time.monotonic() + 300
        while not records(run_dir, "trainer"):
            assert child.is_alive() and time.monotonic() < deadline, "the child trainer never stepped"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
    assert producer.stats().pending == 2 and producer.stats().consumed == 0
    assert not (run_dir / "trained_ids.jsonl").exists()
    ids = sorted(t.id for g in groups for t in g.trajectories)
    assert not any(producer.is_trained(i) for i in ids)

    core = TrainerCore(cfg, redis_url, str(run_dir), consumer="trainer-0", resume=True)  # no checkpoint yet
    m = core.train_step(timeout_s=30)
    assert sorted(m.trained_ids) == ids and m.step == 1
    core.save_checkpoint()  # the commit
    assert core.train_step(timeout_s=1.0).state is StepState.NO_DATA_YET  # not handed out again
    stats = producer.stats()
    assert stats.pending == 0 and stats.consumed == 2 and stats.duplicates == 0
    audit = [json.loads(line) for line in (run_dir / "trained_ids.jsonl").read_text().splitlines()]
    assert sorted(i for rec in audit for i in rec["ids"]) == ids  # exactly once

    resumed = TrainerCore(cfg, redis_url, str(run_dir), consumer="trainer-0", resume=True)
    assert resumed.step() == 1 and resumed.version() == 1


def test_trainer_actor_on_ray(ray_local, redis_url, tmp_path, tiny_model_path):
    cfg = config(tiny_model_path)
    producer = TrajectoryBuffer(cfg.buffer, redis_url, consumer="producer", keys=RunKeys.of(cfg))
    actor = TrainerActor.options(num_cpus=0).remote(cfg, redis_url, str(tmp_path), consumer="trainer-ray")
    try:
        producer.put_many([group(f"r{i}", [0, 0, 0, 0], n=4) for i in range(2)])
        m = ray_local.get(actor.train_step.remote(timeout_s=60))
        assert m.trained and m.version == 1 and len(m.trained_ids) == 8
        assert ray_local.get(actor.version.remote()) == 1
        assert producer.stats().pending == 0
    finally:
        ray_local.kill(actor)


class SlowPublisher:
    """Records what it was handed, after a delay (the relay's serialisation and hand-off take seconds)."""

    def __init__(self, fail: bool = False):
        self.fail, self.got = fail, []

    def publish(self, version, named_tensors):
        time.sleep(0.5)
        if self.fail:
            raise ConnectionError("root relay is gone")
        self.got.append((version, {k: v.clone() for k, v in named_tensors.items()}))
        return PushReceipt(version=version, accepted=True)


def test_background_publication_hands_over_a_snapshot_and_surfaces_its_result(
    parallel, redis_url, tmp_path, tiny_model_path
):
    cfg = config(tiny_model_path)
    core = TrainerCore(cfg, redis_url, str(tmp_path), consumer="trainer-bg")
    producer = TrajectoryBuffer(cfg.buffer, redis_url, consumer="producer", keys=RunKeys.of(cfg))
    producer.put_many([on_policy_group(core.policy, f"bg{i}") for i in range(2)])
    core.train_step(timeout_s=30)
    publisher = SlowPublisher()
    snapshot = {k: v.clone() for k, v in core.export_weights().items()}
    receipt = core.publish_weights(publisher, background=True)
    assert receipt.version == 1 and receipt.background and receipt.blocked_s < 0.5
    # the trainer steps on while the publication runs; what was published is the weights at push time
    producer.put_many([on_policy_group(core.policy, f"bh{i}", version=1) for i in range(2)])
    assert core.train_step(timeout_s=30).version == 2
    second = core.publish_weights(publisher, background=True)
    assert second.previous == PushReceipt(version=1, accepted=True)
    assert core.finish_publication() == PushReceipt(version=2, accepted=True) and core.finish_publication() is None
    version, published = publisher.got[0]
    assert version == 1 and all(torch.equal(published[k], v) for k, v in snapshot.items())
    assert any(not torch.equal(publisher.got[1][1][k], v) for k, v in snapshot.items())  # step 2 moved them
    # a failed publication is not lost: it is raised to the loop at the next push or at the end of the run
    core.publish_weights(SlowPublisher(fail=True), background=True)
    with pytest.raises(ConnectionError, match="root relay"):
        core.finish_publication()
