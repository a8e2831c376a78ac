"""A rollout worker's place in its prompts survives a restart: it goes on after what it pushed, redoes what was in
flight, and skips what it dropped on purpose (tiny engine, real Redis)."""

from __future__ import annotations

import asyncio

from test_worker import LongTailEnv, cfg_for, read_all

from slime_rl.rollout.progress import PromptProgress
from slime_rl.rollout.worker import RolloutWorkerCore

LONG_TAIL = {"env.name": f"{__name__}:EpochOf64", "rollout.sampling.max_new_tokens": 300}


class EpochOf64(LongTailEnv):
    """Odd prompts are slow; an epoch is longer than what these tests start, so a prompt index is a slot."""

    @classmethod
    def load_dataset(cls, path, split="train", **kw):
        return [{"id": str(i), "question": f"say {i}", "max_new_tokens": 300 if i % 2 else 3} for i in range(64)]


def pushed_prompts(cfg, redis_url) -> list[int]:
    return sorted(e.group.prompt_index for e in read_all(cfg, redis_url))


def test_a_restarted_worker_redoes_the_groups_in_flight_and_nothing_it_pushed(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(tiny_model_path, **LONG_TAIL, **{"rollout.over_provision": 2.0})
    first = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    asyncio.run(first.generate_groups(1))  # prompt 0 pushed; prompt 1 (the long tail) kept in memory only
    assert [g.prompt_index for g in first.store.waiting] == [1]

    cfg.rollout.over_provision = 1.0
    restarted = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)  # the first one "died" with its tail
    assert restarted.started == 1  # the run's capacity count goes on from what was pushed
    asyncio.run(restarted.generate_groups(2))
    assert pushed_prompts(cfg, redis_url) == [0, 1, 2]


def test_a_stale_tail_dropped_by_the_worker_is_not_redone(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(tiny_model_path, **LONG_TAIL, **{"rollout.over_provision": 2.0, "rollout.staleness_tau": 1})
    first = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    asyncio.run(first.generate_groups(1))  # pushes 0, keeps 1
    first.policy_version.set(2)  # prompt 1's tokens are now too old
    asyncio.run(first.generate_groups(1))  # drops 1, pushes 2, keeps 3
    assert first.store.dropped_groups == 1 and pushed_prompts(cfg, redis_url) == [0, 2]
    assert PromptProgress.from_wire(first.buffer.progress("0")) == PromptProgress(3)

    cfg.rollout.over_provision = 1.0
    asyncio.run(RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0).generate_groups(1))
    assert pushed_prompts(cfg, redis_url) == [0, 2, 3]  # 3 was in flight; 1 stays used up


def test_groups_cut_by_stop_are_run_again_first(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(tiny_model_path, **LONG_TAIL, **{"rollout.staleness_tau": 4})
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)

    async def produce_then_stop():
        task = asyncio.create_task(worker.run())
        while worker.pushed < 3:  # short (even) prompts are in; long (odd) ones are decoding
            await asyncio.sleep(0.02)
        worker.stop()
        return await task

    stats = asyncio.run(produce_then_stop())
    assert stats["started"] == stats["pushed"]  # what was cut is no longer counted as started
    first = pushed_prompts(cfg, redis_url)
    holes = sorted(set(range(max(first))) - set(first))
    assert holes, f"nothing was cut short: {first}"
    asyncio.run(worker.generate_groups(len(holes)))  # e.g. after a pause from the dashboard
    assert pushed_prompts(cfg, redis_url) == list(range(max(first) + 1))


def test_the_evaluation_worker_neither_restores_nor_stores_progress(tiny_engine, tiny_model_path, redis_url):
    cfg = cfg_for(tiny_model_path)
    producer = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    asyncio.run(producer.generate_groups(2))
    evaluator = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 1000)
    assert evaluator.started == 0 and evaluator.progress == PromptProgress()
    asyncio.run(evaluator.evaluate([{"id": "e", "question": "What is 1 + 1?", "answer": "2"}]))
    assert evaluator.buffer.progress("1000") is None
    assert PromptProgress.from_wire(producer.buffer.progress("0")) == PromptProgress(2)
