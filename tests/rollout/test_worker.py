"""Rollout workers against a real engine (tiny model) and a real Redis buffer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from slime_rl.buffer import TrajectoryBuffer
from slime_rl.config import load_config
from slime_rl.env_api import SingleTurnEnv
from slime_rl.rollout.worker import RolloutWorkerCore
from slime_rl.run_keys import RunKeys
from slime_rl.trajectory import Status


class ExplodingEnv(SingleTurnEnv):
    """Its reward crashes for odd prompts."""

    def prompt(self, sample):
        return [{"role": "user", "content": sample["question"]}]

    def reward(self, sample, response):
        if int(sample["id"]) % 2:
            raise RuntimeError("reward function crashed")
        return 1.0

    @classmethod
    def load_dataset(cls, path, split="train", **kw):
        return [{"id": str(i), "question": f"say {i}"} for i in range(8)]


class LongTailEnv(ExplodingEnv):
    """Odd prompts may run 300 tokens (the tiny random model rarely stops by itself), even ones only 3."""

    def reward(self, sample, response):
        return 0.5

    @classmethod
    def load_dataset(cls, path, split="train", **kw):
        return [{"id": str(i), "question": f"say {i}", "max_new_tokens": 300 if i % 2 else 3} for i in range(8)]


def cfg_for(model, **over: Any):
    base = {
        "model.path": str(model),
        "rollout.group_size": 2,
        "rollout.sampling.max_new_tokens": 6,
        "env.name": "slime_rl_examples.math_env:ArithmeticEnv",
        "rollout.shuffle": "false",
    }
    base.update(over)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def read_all(cfg, redis_url):
    return TrajectoryBuffer(cfg.buffer, redis_url, "test-reader", keys=RunKeys.of(cfg)).read(100, block_ms=200)


def test_worker_pushes_valid_groups(tiny_engine, tiny_model_path, redis_url, tmp_path):
    cfg = cfg_for(tiny_model_path)
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0, str(tmp_path))
    stats = asyncio.run(worker.generate_groups(3))
    assert stats["pushed"] == 3 and stats["tokens"] > 0
    got = read_all(cfg, redis_url)
    assert len(got) == 3
    for entry in got:
        trajs = entry.group.trajectories
        assert len(trajs) == 2 and {t.group_id for t in trajs} == {entry.group.group_id}
        assert [t.sample_index for t in trajs] == [0, 1]
        for t in trajs:
            assert t.status in (Status.COMPLETED, Status.TRUNCATED) and t.env_name == "arithmetic"
            assert 0 < len(t.response_ids) <= 6 and t.loss_mask == [1] * len(t.response_ids)
            assert all(lp <= 0 for lp in t.rollout_logprobs) and set(t.versions) == {0}
            assert 0.0 <= t.reward <= 1.0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rollout = [r for r in records if r["kind"] == "rollout"]
    assert len(rollout) == 3 and {
        "engine",
        "tokens",
        "dt_s",
        "tokens_per_s",
        "trajectories",
        "groups",
        "reward_mean",
        "response_len_mean",
        "aborted",
        "failed",
    } <= set(rollout[0])
    assert rollout[0]["engine"] == tiny_engine.url
    sample = [r for r in records if r["kind"] == "trajectory"][0]
    assert {
        "id",
        "group_id",
        "env",
        "status",
        "reward",
        "length",
        "text",
        "prompt_ids",
        "response_ids",
        "loss_mask",
        "versions",
    } <= set(sample)


def test_failing_reward_fails_the_sample_not_the_worker(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(tiny_model_path, **{"env.name": f"{__name__}:ExplodingEnv"})
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    asyncio.run(worker.generate_groups(4))
    groups = read_all(cfg, redis_url)
    statuses = {g.group.prompt_index: {t.status for t in g.group.trajectories} for g in groups}
    assert sorted(statuses) == [0, 1, 2, 3]
    for index, seen in statuses.items():
        assert (seen == {Status.FAILED}) if index % 2 else (Status.FAILED not in seen)
    failed = [t for g in groups for t in g.group.trajectories if t.status == Status.FAILED]
    assert all("reward function crashed" in t.metadata["reason"] for t in failed)
    stats = asyncio.run(worker.generate_groups(1))
    assert stats["pushed"] == 5 and stats["failed"] == 4  # still working


def test_async_run_respects_the_admission_limit(tiny_engine, tiny_model_path, redis_url):
    # capacity = (version 0 + tau 1 + 1) * groups_per_step 2 = 4 groups, whatever max_groups says
    cfg = cfg_for(tiny_model_path, **{"rollout.staleness_tau": 1, "rollout.groups_per_step": 2})
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)

    async def produce():
        task = asyncio.create_task(worker.run(max_groups=10))
        while not (worker.pushed == 4 and worker.at_capacity):  # all it may start is done, and it holds back
            await asyncio.sleep(0.05)
        assert worker.started == 4
        worker.policy_version.set(1)  # the trainer stepped, but the engine still holds version 0
        capacity_after = await worker._capacity()
        worker.stop()
        return capacity_after, await task

    capacity_after, stats = asyncio.run(produce())
    assert capacity_after == 4 and stats["started"] == 4 and stats["pushed"] == 4
    assert len(read_all(cfg, redis_url)) == 4


def test_long_tail_is_aborted_kept_and_resumed(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(
        tiny_model_path,
        **{
            "env.name": f"{__name__}:LongTailEnv",
            "rollout.over_provision": 2.0,
            "rollout.sampling.max_new_tokens": 300,
        },
    )
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    stats = asyncio.run(worker.generate_groups(1))  # starts prompts 0 (short) and 1 (long)
    assert stats["pushed"] == 1 and stats["aborted"] == 2 and stats["waiting_groups"] == 1
    [short] = read_all(cfg, redis_url)
    assert short.group.prompt_index == 0
    [tail] = worker.store.waiting
    assert tail.prompt_index == 1 and len(tail.partials) == 2
    kept = {p.sample_index: list(p.output_ids) for p in tail.partials}
    assert all(0 < len(ids) < 300 for ids in kept.values())  # cut off early, tokens kept

    cfg.rollout.over_provision = 1.0  # the next step needs one group: the kept one, resumed
    stats = asyncio.run(worker.generate_groups(1))
    assert stats["pushed"] == 2 and stats["resumed"] == 2 and stats["waiting_groups"] == 0
    [resumed] = [e for e in read_all(cfg, redis_url) if e.group.prompt_index == 1]
    assert resumed.group.prompt_index == 1 and resumed.group.group_id == tail.group_id
    for t in resumed.group.trajectories:
        n = len(kept[t.sample_index])
        assert t.response_ids[:n] == kept[t.sample_index]  # continued from its own tokens
        assert len(t.response_ids) <= 300 and t.metadata["resumed"] == 1  # within the original budget
        assert len(t.versions) == len(t.rollout_logprobs) == len(t.response_ids) == sum(t.loss_mask)


def test_stale_partials_are_dropped(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(
        tiny_model_path,
        **{
            "env.name": f"{__name__}:LongTailEnv",
            "rollout.over_provision": 2.0,
            "rollout.sampling.max_new_tokens": 300,
            "rollout.staleness_tau": 1,
        },
    )
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    asyncio.run(worker.generate_groups(1))
    assert worker.store.num_partials() == 2
    worker.policy_version.set(2)  # the kept tokens (version 0) are now 2 > tau behind
    stats = asyncio.run(worker.generate_groups(1))
    assert stats["partials_dropped"] == 2 and stats["pushed"] == 2
    assert {e.group.prompt_index for e in read_all(cfg, redis_url)} == {0, 2}


def test_evaluate_does_not_push(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(tiny_model_path)
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    samples = [{"id": "e", "question": "What is 2 + 2?", "answer": "4"}] * 3
    result = asyncio.run(worker.evaluate(samples))
    assert result.samples == 3 and 0.0 <= result.reward_mean <= 1.0 and result.failed == 0
    assert read_all(cfg, redis_url) == []


def test_async_run_resumes_requests_the_engine_aborts(tiny_engine, tiny_model_path, redis_url):
    from slime_rl.rollout.engine_client import EngineClient

    cfg = cfg_for(
        tiny_model_path,
        **{"env.name": f"{__name__}:LongTailEnv", "rollout.sampling.max_new_tokens": 200, "rollout.staleness_tau": 4},
    )
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)

    async def produce():
        client = EngineClient(tiny_engine.url)
        task = asyncio.create_task(worker.run(max_groups=2))  # prompts 0 (3 tokens) and 1 (200 tokens)
        while worker.pushed < 1 or not worker.router._rids:  # the short group is in, the long one in flight
            await asyncio.sleep(0.01)
        while (await client.server_info())["num_running_reqs"] == 0:  # the long one is decoding on the engine
            await asyncio.sleep(0.005)
        await client.abort(abort_all=True)  # e.g. a weight swap in abort mode
        return await task

    stats = asyncio.run(produce())
    assert stats["pushed"] == 2 and stats["aborted"] >= 1 and stats["resumed"] >= 1
    [long] = [e for e in read_all(cfg, redis_url) if e.group.prompt_index == 1]
    for t in long.group.trajectories:
        assert len(t.response_ids) <= 200 and sum(t.loss_mask) == len(t.response_ids)
    assert any(t.metadata.get("resumed") for t in long.group.trajectories)
