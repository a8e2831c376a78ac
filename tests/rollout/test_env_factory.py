"""Environment factories: env.kwargs and env.dataset_kwargs are checked once at start-up (a typo is an error that
names the field and the key), a factory's shared resource is built once per worker and closed once, and the simple
`Env`-subclass path still builds one instance per episode."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from slime_rl.config import load_config
from slime_rl.env_api import (
    Env,
    EnvError,
    EnvFactory,
    SimpleEnvFactory,
    SingleTurnEnv,
    build_env_factory,
    check_kwargs,
    load_env_class,
)
from slime_rl.launcher import eval_samples
from slime_rl.rollout.dataset import load_prompts
from slime_rl.rollout.worker import RolloutWorkerCore
from slime_rl_examples.calculator_env import CalculatorEnv
from slime_rl_examples.math_env import ArithmeticEnv
from slime_rl_examples.template_env import TemplateFactory, TemplateMultiTurnEnv, TemplateSharedEnv


class SharedClient:
    """Stands in for an expensive shared resource (a judge, an HTTP client): counts its lifetime."""

    built = 0
    closed = 0

    def __init__(self) -> None:
        SharedClient.built += 1
        self.open = True

    def close(self) -> None:
        SharedClient.closed += 1
        self.open = False


class SharedClientEnv(SingleTurnEnv):
    name = "shared-client"

    def __init__(self, client: SharedClient):
        super().__init__()
        self.client = client

    def prompt(self, sample: dict[str, Any]):
        return [{"role": "user", "content": sample["question"]}]

    def reward(self, sample: dict[str, Any], response_text: str) -> float:
        assert self.client.open, "an episode ran after its factory was closed"
        return 1.0

    @classmethod
    def load_dataset(cls, path: Any, split: str = "train", num_samples: int = 8) -> list[dict[str, Any]]:
        return [{"id": str(i), "question": f"say {i}"} for i in range(num_samples)]


class SharedClientFactory(EnvFactory):
    env_class = SharedClientEnv
    episodes = 0

    def __init__(self, label: str = "x"):
        self.client = SharedClient()

    def new_episode(self) -> SharedClientEnv:
        SharedClientFactory.episodes += 1
        return SharedClientEnv(self.client)

    async def close(self) -> None:
        self.client.close()


class NoEnvClassFactory(EnvFactory):
    def new_episode(self) -> Env:
        raise AssertionError("never built")


def worker_cfg(model, **over: Any):
    base = {
        "model.path": str(model),
        "rollout.group_size": 2,
        "rollout.sampling.max_new_tokens": 4,
        "rollout.shuffle": "false",
        "rollout.over_provision": 1.0,
    }
    base.update(over)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def test_typos_in_env_kwargs_and_dataset_kwargs_name_the_field_and_key():
    with pytest.raises(
        EnvError,
        match=r"env.kwargs: unknown key 'format_bonsu' for ArithmeticEnv .*"
        r"did you mean 'format_bonus'",
    ):
        build_env_factory(ArithmeticEnv, {"format_bonsu": 0.1})
    # a dataset option in the constructor's map (the old single `kwargs`) is no longer swallowed
    with pytest.raises(EnvError, match="env.kwargs: unknown key 'max_operand' for ArithmeticEnv"):
        build_env_factory(ArithmeticEnv, {"max_operand": 9, "format_bonus": 0.0})
    with pytest.raises(EnvError, match=r"env.kwargs: unknown key 'x' for CalculatorEnv \(it takes: nothing\)"):
        build_env_factory(CalculatorEnv, {"x": 1})  # no constructor of its own: takes no keys at all
    with pytest.raises(EnvError, match="env.dataset_kwargs: unknown key 'max_operant' for ArithmeticEnv.load_dataset"):
        load_prompts(ArithmeticEnv, None, "train", {"max_operant": 9})
    with pytest.raises(EnvError, match="env.dataset_kwargs: unknown key 'split'"):
        load_prompts(ArithmeticEnv, None, "train", {"split": "eval"})  # path and split are the worker's
    with pytest.raises(EnvError, match="env.dataset_kwargs: unknown key 'format_bonus'"):
        load_prompts(ArithmeticEnv, None, "train", {"format_bonus": 0.2})
    with pytest.raises(EnvError, match="env.dataset_kwargs: unknown key 'nmu_samples'.*SharedClientEnv.load_dataset"):
        load_prompts(SharedClientFactory, None, "train", {"nmu_samples": 3})  # a factory defers to its env_class
    with pytest.raises(EnvError, match="env.kwargs: unknown key 'lable' for SharedClientFactory"):
        build_env_factory(SharedClientFactory, {"lable": "y"})
    assert SharedClient.built == 0  # rejected before any resource was built
    with pytest.raises(EnvError, match="NoEnvClassFactory.env_class must be"):
        build_env_factory(NoEnvClassFactory, {})
    with pytest.raises(EnvError, match="NoEnvClassFactory.env_class must be"):
        load_prompts(NoEnvClassFactory, None, "train", {})


def test_kwargs_check_accepts_what_the_signatures_take():
    assert len(load_prompts(ArithmeticEnv, None, "train", {"num_samples": 5, "max_operand": 3, "ops": "+-"})) == 5
    assert len(load_prompts(SharedClientFactory, None, "eval", {"num_samples": 3})) == 3
    env = build_env_factory(ArithmeticEnv, {"format_bonus": 0.2}).new_episode()
    assert isinstance(env, ArithmeticEnv) and env.format_bonus == 0.2
    check_kwargs(lambda **anything: None, {"whatever": 1}, "env.kwargs")  # `**kwargs` opts out, on purpose
    with pytest.raises(EnvError, match=r"env.kwargs: \S*\bf needs 'a', 'b'"):

        def f(a, b, c=1): ...

        check_kwargs(f, {"c": 2}, "env.kwargs")


def test_simple_path_builds_one_instance_per_episode_with_env_kwargs():
    factory = build_env_factory(load_env_class("template-multi-turn"), {"low": 1, "high": 3, "max_guesses": 2})
    assert isinstance(factory, SimpleEnvFactory) and factory.env_class is TemplateMultiTurnEnv
    a, b = factory.new_episode(), factory.new_episode()
    assert a is not b and (a.low, a.high, a.max_guesses) == (1, 3, 2)  # per-episode state stays per episode
    asyncio.run(factory.close())  # nothing shared: a no-op


def test_template_factory_shares_its_pool_and_closes_it():
    factory = build_env_factory(load_env_class("slime_rl_examples.template_env:TemplateFactory"), {"threads": 1})
    assert isinstance(factory, TemplateFactory)

    async def run(i: int) -> float:
        env = factory.new_episode()
        assert isinstance(env, TemplateSharedEnv) and env.pool is factory.pool
        await env.reset({"question": "Capital of France?", "answer": "Paris"})
        return (await env.step("Paris" if i % 2 else "Rome")).reward

    async def episodes():
        return await asyncio.gather(*(run(i) for i in range(4)))

    assert asyncio.run(episodes()) == [0.0, 1.0, 0.0, 1.0]
    asyncio.run(factory.close())
    with pytest.raises(RuntimeError, match="shutdown"):
        factory.pool.submit(print)


def test_worker_rejects_a_kwargs_typo_at_start_up(tiny_model_path):
    """In the constructor, so RunContext.wait_until_ready reports it before any episode runs."""
    nowhere = ["http://127.0.0.1:9"]
    with pytest.raises(EnvError, match="env.kwargs: unknown key 'format_bonsu'"):
        RolloutWorkerCore(
            worker_cfg(tiny_model_path, **{"env.kwargs": '{"format_bonsu": 0.1}'}), nowhere, "redis://127.0.0.1:9", 0
        )
    with pytest.raises(EnvError, match="env.dataset_kwargs: unknown key 'max_operant'"):
        RolloutWorkerCore(
            worker_cfg(tiny_model_path, **{"env.dataset_kwargs": '{"max_operant": 9}'}),
            nowhere,
            "redis://127.0.0.1:9",
            0,
        )
    with pytest.raises(EnvError, match="env.dataset_kwargs: unknown key 'max_operant'"):
        eval_samples(worker_cfg(tiny_model_path, **{"env.dataset_kwargs": '{"max_operant": 9}'}))


def test_worker_builds_its_factory_once_and_closes_it_once(tiny_engine, tiny_model_path, redis_url):
    SharedClient.built = SharedClient.closed = SharedClientFactory.episodes = 0
    cfg = worker_cfg(
        tiny_model_path, **{"env.name": f"{__name__}:SharedClientFactory", "env.dataset_kwargs": '{"num_samples": 4}'}
    )
    worker = RolloutWorkerCore(cfg, [tiny_engine.url], redis_url, 0)
    assert len(worker.dataset) == 4
    stats = asyncio.run(worker.generate_groups(3))
    result = asyncio.run(worker.evaluate([{"id": "e", "question": "say e"}] * 3))
    assert stats["pushed"] == 3 and stats["failed"] == 0 and result.samples == 3 and result.failed == 0
    assert SharedClientFactory.episodes >= 3 * 2 + 3 and SharedClient.built == 1  # one client for every episode
    asyncio.run(worker.close())
    asyncio.run(worker.close())  # the run may call it again: still one close
    assert SharedClient.closed == 1 and not worker.envs.client.open
