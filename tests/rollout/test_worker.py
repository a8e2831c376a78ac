"""Rollout workers against a real engine (tiny model) and a real Redis buffer."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from slime_rl.buffer import TrajectoryBuffer
from slime_rl.config import load_config
from slime_rl.env_api import Env, EnvError, ResetResult, SingleTurnEnv, StepResult, load_env_class
from slime_rl.rollout.episode import EpisodeRunner
from slime_rl.rollout.partial import Partial, PartialStore
from slime_rl.rollout.router import Router
from slime_rl.rollout.worker import RolloutWorkerCore
from slime_rl.trajectory import Status


class ExplodingEnv(SingleTurnEnv):
    """Fails its reward for every other prompt."""

    def prompt(self, sample):
        return [{"role": "user", "content": sample["question"]}]

    def reward(self, sample, response):
        if int(sample["id"]) % 2:
            raise RuntimeError("reward function crashed")
        return 1.0

    @classmethod
    def load_dataset(cls, path, split="train", **kw):
        return [{"id": str(i), "question": f"say {i}"} for i in range(8)]


class ScriptedToolEnv(Env):
    """Two turns: always answers the first reply with a tool observation, then ends."""

    async def reset(self, sample):
        self.turns = 0
        return ResetResult(messages=[{"role": "user", "content": "use the tool"}])

    async def step(self, response_text):
        self.turns += 1
        if self.turns == 1:
            return StepResult(observation="<result>42</result>", done=False)
        return StepResult(done=True, reward=0.5)


def cfg_for(model, **over: Any):
    base = {"model.path": str(model), "rollout.group_size": 2, "rollout.sampling.max_new_tokens": 6,
            "env.name": "slime_rl_examples.math_env:ArithmeticEnv"}
    base.update(over)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def test_worker_pushes_valid_groups(tiny_engine, tiny_model_path, redis_url, tmp_path):
    cfg = cfg_for(tiny_model_path)
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0, str(tmp_path))
    stats = asyncio.run(worker.generate_groups(3))
    assert stats["pushed"] == 3
    got = TrajectoryBuffer(cfg.buffer, redis_url, "t").read(10, block_ms=200)
    assert len(got) == 3
    for entry in got:
        trajs = entry.group.trajectories
        assert len(trajs) == 2 and {t.group_id for t in trajs} == {entry.group.group_id}
        for t in trajs:
            assert t.status in (Status.COMPLETED, Status.TRUNCATED)
            assert 0 < len(t.response_ids) <= 6 and t.loss_mask == [1] * len(t.response_ids)
            assert all(lp <= 0 for lp in t.rollout_logprobs) and set(t.versions) == {0}
    assert (tmp_path / "metrics.jsonl").exists()


def test_failing_reward_fails_the_sample_not_the_worker(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(tiny_model_path, **{"env.name": f"{__name__}:ExplodingEnv"})
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    asyncio.run(worker.generate_groups(4))
    groups = TrajectoryBuffer(cfg.buffer, redis_url, "t").read(10, block_ms=200)
    statuses = {g.group.prompt_index: {t.status for t in g.group.trajectories} for g in groups}
    assert sorted(statuses) == [0, 1, 2, 3]
    for index, seen in statuses.items():
        assert (seen == {Status.FAILED}) if index % 2 else (Status.FAILED not in seen)
    failed = [t for g in groups for t in g.group.trajectories if t.status == Status.FAILED]
    assert all("reward function crashed" in t.metadata["failure"] for t in failed)
    assert asyncio.run(worker.generate_groups(1))["pushed"] == 5  # still working


def test_multi_turn_loss_mask_covers_exactly_the_model_tokens(tiny_engine, tiny_model_path):
    cfg = cfg_for(tiny_model_path, **{"env.max_turns": 3})
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    runner = EpisodeRunner(ScriptedToolEnv, cfg.env, cfg.rollout.sampling, tok, Router([tiny_engine.url]))
    traj = asyncio.run(runner.run({}, "g", 0))
    assert traj.status == Status.COMPLETED and traj.reward == 0.5
    mask = traj.loss_mask
    first_obs = mask.index(0)
    n_obs = mask[first_obs:].index(1)
    obs_text = tok.decode(traj.response_ids[first_obs:first_obs + n_obs])
    assert "<result>42</result>" in obs_text and "assistant" in obs_text
    assert all(v == -1 for v, m in zip(traj.versions, mask) if m == 0)
    assert all(v >= 0 for v, m in zip(traj.versions, mask) if m == 1)
    assert all(lp == 0.0 for lp, m in zip(traj.rollout_logprobs, mask) if m == 0)
    assert sum(mask) > 0 and mask.count(0) == n_obs  # two model turns around one observation


def test_resumed_partial_keeps_its_tokens_and_budget(tiny_engine, tiny_model_path):
    cfg = cfg_for(tiny_model_path, **{"rollout.sampling.max_new_tokens": 10, "rollout.sampling.temperature": 0.0})
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    env_cls = load_env_class(cfg.env.name)
    runner = EpisodeRunner(env_cls, cfg.env, cfg.rollout.sampling, tok, Router([tiny_engine.url]))
    sample = env_cls.load_dataset(None)[0]
    full = asyncio.run(runner.run(sample, "g", 0, greedy=True))
    assert len(full.response_ids) == 10 or full.finish_reason == "stop"
    k = 4
    part = Partial("g-0", sample, "g", 0, full.prompt_ids, full.response_ids[:k], full.rollout_logprobs[:k], [7] * k)
    resumed = asyncio.run(runner.run(sample, "g", 0, greedy=True, resume=part))
    assert resumed.response_ids == full.response_ids  # same tokens, continued from where it stopped
    assert resumed.versions[:k] == [7] * k and len(resumed.response_ids) <= 10
    assert resumed.rollout_logprobs[:k] == full.rollout_logprobs[:k]


def test_partial_store_drops_stale_partials():
    store = PartialStore(tau=2)
    store.put(Partial("a", {}, "g", 0, [1], [5], [-0.1], [3]))
    store.put(Partial("b", {}, "g", 1, [1], [5], [-0.1], [0]))
    store.put(Partial("c", {}, "g", 2, [1]))  # nothing generated yet: never stale
    fresh = store.take_resumable(trainer_version=4)
    assert sorted(p.key for p in fresh) == ["a", "c"] and store.dropped == 1 and len(store) == 0
    assert fresh[0].remaining(10) in (9, 10)


def test_env_loading_errors_are_clear():
    with pytest.raises(EnvError, match="cannot import"):
        load_env_class("no_such_module:Env")
    with pytest.raises(EnvError, match="has no attribute"):
        load_env_class("slime_rl_examples.math_env:Nope")
    with pytest.raises(EnvError, match="not a subclass"):
        load_env_class("slime_rl_examples.math_env:make_problems")
    assert load_env_class("arithmetic").__name__ == "ArithmeticEnv"  # the entry point


def test_router_affinity_and_health(tiny_engine):
    import httpx

    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    router = Router([tiny_engine.url, dead])
    keys = [f"episode-{i}" for i in range(40)]
    picks = {k: router.pick(k) for k in keys}
    assert set(picks.values()) == {tiny_engine.url, dead}  # both used while healthy
    assert all(router.pick(k) == picks[k] for k in keys)  # the same episode keeps its engine
    healthy = asyncio.run(router.check_health())
    assert healthy == {tiny_engine.url}
    assert all(router.pick(k) == tiny_engine.url for k in keys)
    assert httpx.get(f"{tiny_engine.url}/health").status_code == 200
