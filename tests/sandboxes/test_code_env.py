"""The code-writing example: rewards come from the judge running the task's tests in the sandbox; the judge and its
sandbox pool belong to the factory (one per worker), not to an episode."""

import asyncio
import time

import pytest

from slime_rl.env_api import EnvError, build_env_factory, load_env_class
from slime_rl.rollout.dataset import load_prompts

GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
BAD = "```python\ndef add(a, b):\n    return a * b\n```"


FACTORY = "slime_rl_examples.code_env:CodeEnvFactory"


def test_code_env_rewards_come_from_running_the_tests():
    plugin = load_env_class(FACTORY)
    tasks = load_prompts(plugin, None, "train", {})  # the factory's dataset is its CodeEnv's
    assert len(tasks) >= 8 and all({"id", "question", "tests"} <= set(t) for t in tasks)
    task = next(t for t in tasks if t["id"] == "add")
    factory = build_env_factory(plugin, {"sandbox": {"backend": "bwrap", "warm_pool": 1}})

    async def score(response):
        env = factory.new_episode()
        reset = await env.reset(task)
        assert "add(a, b)" in reset.messages[-1]["content"]
        return await env.step(response)

    try:
        good, bad = asyncio.run(score(GOOD)), asyncio.run(score(BAD))
    finally:
        asyncio.run(factory.close())
    assert good.done and good.reward == 1.0 and good.info["judge"]["checks"][0]["passed"]
    assert bad.reward == 0.0 and not bad.info["judge"]["checks"][0]["passed"]


def test_one_judge_and_sandbox_pool_per_factory_however_many_episodes(monkeypatch):
    import slime_rl.sandboxes.base as sandbox_base

    built = []
    make = sandbox_base.make_sandbox
    monkeypatch.setattr(sandbox_base, "make_sandbox", lambda cfg: built.append(make(cfg)) or built[-1])
    factory = build_env_factory(load_env_class(FACTORY), {"sandbox": {"backend": "bwrap", "warm_pool": 2}})
    task = next(t for t in load_prompts(load_env_class(FACTORY), None, "train", {}) if t["id"] == "add")

    async def episodes(n: int):
        envs = [factory.new_episode() for _ in range(n)]
        for env in envs:
            await env.reset(task)
        return envs, await asyncio.gather(*(env.step(GOOD) for env in envs))

    try:
        envs, steps = asyncio.run(episodes(6))
        assert [s.reward for s in steps] == [1.0] * 6
        assert len(built) == 1 and all(env.judge is factory.judge for env in envs)
        assert factory.judge.sandbox is built[0]
        deadline = time.monotonic() + 30
        while len(factory.sandbox._pool) < 2:  # the pool refills its warm sandboxes after the runs
            assert time.monotonic() < deadline, "the warm pool did not refill"
            time.sleep(0.05)
        warm = list(factory.sandbox._pool)
    finally:
        asyncio.run(factory.close())
    assert all(w.proc.poll() is not None for w in warm)  # close() stopped the pool's sandbox processes
    assert not factory.sandbox._pool and not any(w.root.exists() for w in warm)


def test_code_env_named_directly_says_it_needs_its_judge():
    with pytest.raises(EnvError, match="env.kwargs: CodeEnv needs 'judge'"):
        build_env_factory(load_env_class("slime_rl_examples.code_env:CodeEnv"), {})
    with pytest.raises(EnvError, match="env.kwargs: unknown key 'sandbx'.*did you mean 'sandbox'"):
        build_env_factory(load_env_class(FACTORY), {"sandbx": {"backend": "bwrap"}})
