"""Episodes, token-in-token-out: the loss mask covers exactly the model's tokens; resumes keep their tokens;
environment failures and timeouts fail one sample with a reason."""

from __future__ import annotations

import asyncio

import pytest
from transformers import AutoTokenizer

from slime_rl.config import load_config
from slime_rl.env_api import Env, ResetResult, SimpleEnvFactory, SingleTurnEnv, StepResult
from slime_rl.rollout.episode import EpisodeRunner, encode_chat
from slime_rl.rollout.partial import Partial
from slime_rl.rollout.router import Router
from slime_rl.trajectory import Status
from slime_rl_examples.math_env import ArithmeticEnv


class ScriptedToolEnv(Env):
    """Answers the first reply with a tool observation, then ends."""

    async def reset(self, sample):
        self.turns = 0
        return ResetResult(messages=[{"role": "user", "content": "use the tool"}])

    async def step(self, response_text):
        self.turns += 1
        if self.turns == 1:
            return StepResult(observation="<result>42</result>", done=False, info={"tool_calls": 1})
        return StepResult(done=True, reward=0.5)


class SlowEnv(SingleTurnEnv):
    def prompt(self, sample):
        return [{"role": "user", "content": "hi"}]

    def reward(self, sample, response_text):
        import time

        time.sleep(5)
        return 1.0


class BrokenResetEnv(Env):
    async def reset(self, sample):
        return ResetResult(messages=[])  # violates the contract: a prompt needs at least one message

    async def step(self, response_text):
        return StepResult(reward=1.0)


class BadKwargsEnv(BrokenResetEnv):
    def __init__(self, **kwargs):
        raise TypeError("unexpected keyword 'difficulty'")


class EndlessToolEnv(Env):
    """Never ends the episode itself and gives no reward: only the turn limit ends it."""

    max_turns = 2

    async def reset(self, sample):
        return ResetResult(messages=[{"role": "user", "content": "keep going"}])

    async def step(self, response_text):
        return StepResult(observation="again", done=False)


class DoneWithoutRewardEnv(EndlessToolEnv):
    async def step(self, response_text):
        return StepResult(done=True)


def half_reward(sample, response_text: str) -> float:
    return 0.25


@pytest.fixture(scope="module")
def tok(tiny_model_path):
    return AutoTokenizer.from_pretrained(tiny_model_path)


def runner_for(env_cls, tok, engine, **over) -> EpisodeRunner:
    cfg = load_config(None, [f"{k}={v}" for k, v in {"rollout.sampling.max_new_tokens": 6, **over}.items()])
    return EpisodeRunner(SimpleEnvFactory(env_cls, {}), cfg.env, cfg.rollout.sampling, tok, Router([engine.url]))


def test_multi_turn_loss_mask_covers_exactly_the_model_tokens(tiny_engine, tok):
    traj = asyncio.run(runner_for(ScriptedToolEnv, tok, tiny_engine, **{"env.max_turns": 3}).run({}, "g", 0))
    assert traj.status in (Status.COMPLETED, Status.TRUNCATED) and traj.reward == 0.5, traj.metadata
    mask = traj.loss_mask
    first_obs = mask.index(0)
    n_obs = mask[first_obs:].index(1)
    assert mask == [1] * first_obs + [0] * n_obs + [1] * (len(mask) - first_obs - n_obs)  # model, env, model
    obs_text = tok.decode(traj.response_ids[first_obs : first_obs + n_obs])
    assert "<result>42</result>" in obs_text and obs_text.rstrip().endswith("assistant")
    # the observation tokens are exactly the chat template's rendering of that turn, tokenised once
    expect = tok("<|im_start|>user\n<result>42</result><|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)[
        "input_ids"
    ]
    assert traj.response_ids[first_obs : first_obs + n_obs][-len(expect) :] == expect
    assert all(v == -1 and lp == 0.0 for v, lp, m in zip(traj.versions, traj.rollout_logprobs, mask) if m == 0)
    assert all(v >= 0 and lp <= 0.0 for v, lp, m in zip(traj.versions, traj.rollout_logprobs, mask) if m == 1)
    assert traj.prompt_ids == encode_chat(tok, [{"role": "user", "content": "use the tool"}])
    assert traj.metadata["tool_calls"] == 1


def test_resumed_partial_keeps_its_tokens_and_reduces_the_budget(tiny_engine, tok):
    runner = runner_for(ArithmeticEnv, tok, tiny_engine, **{"rollout.sampling.max_new_tokens": 10})
    sample = ArithmeticEnv.load_dataset(None)[0]
    full = asyncio.run(runner.run(sample, "g", 0, greedy=True))
    k = 4
    assert len(full.response_ids) > k
    part = Partial("g-0", sample, "g", 0, full.prompt_ids, full.response_ids[:k], full.rollout_logprobs[:k], [7] * k)
    sent = []
    real_generate = runner.router.generate

    async def spy(key, input_ids, params, rid=None):  # records what the engine was asked, then really asks it
        sent.append((key, len(input_ids), params["max_new_tokens"]))
        return await real_generate(key, input_ids, params, rid)

    runner.router.generate = spy
    resumed = asyncio.run(runner.run(sample, "g", 0, greedy=True, resume=part))
    assert sent == [("g-0", len(full.prompt_ids) + k, 10 - k)]  # same engine key, its tokens, reduced budget
    assert resumed.response_ids == full.response_ids  # continued exactly where it stopped
    assert resumed.versions[:k] == [7] * k and resumed.rollout_logprobs[:k] == full.rollout_logprobs[:k]
    assert resumed.loss_mask == [1] * len(resumed.response_ids) and resumed.metadata["resumed"] == 1


def test_env_timeouts_and_contract_violations_fail_the_sample(tiny_engine, tok):
    slow = asyncio.run(runner_for(SlowEnv, tok, tiny_engine, **{"env.reward_timeout_s": 0.5}).run({}, "g", 0))
    assert slow.status == Status.FAILED and "timeout" in slow.metadata["reason"] and slow.reward == 0.0
    broken = asyncio.run(runner_for(BrokenResetEnv, tok, tiny_engine).run({}, "g", 1))
    assert broken.status == Status.FAILED and "messages" in broken.metadata["reason"]
    unbuilt = asyncio.run(runner_for(BadKwargsEnv, tok, tiny_engine).run({}, "g", 2))
    assert unbuilt.status == Status.FAILED and "difficulty" in unbuilt.metadata["reason"]


def test_reward_fn_from_the_config_replaces_the_env_reward(tiny_engine, tok):
    runner = runner_for(ArithmeticEnv, tok, tiny_engine, **{"env.reward_fn": f"{__name__}:half_reward"})
    traj = asyncio.run(runner.run({"id": "x", "question": "What is 1 + 1?", "answer": "2"}, "g", 0))
    assert traj.reward == 0.25 and traj.status != Status.FAILED


def test_the_turn_limit_is_the_env_classes_unless_the_config_sets_one_and_a_cut_names_it(tiny_engine, tok):
    by_class = asyncio.run(runner_for(EndlessToolEnv, tok, tiny_engine).run({}, "g", 0))
    assert by_class.status == Status.FAILED
    assert "cut at EndlessToolEnv.max_turns=2" in by_class.metadata["reason"]
    assert "set env.max_turns, or return a reward" in by_class.metadata["reason"]
    mask = "".join(map(str, by_class.loss_mask))
    assert mask.count("10") == 1 and mask.count("01") == 1  # two model turns around one observation
    by_config = asyncio.run(runner_for(EndlessToolEnv, tok, tiny_engine, **{"env.max_turns": 1}).run({}, "g", 1))
    assert by_config.status == Status.FAILED and "cut at env.max_turns=1" in by_config.metadata["reason"]
    assert 0 not in by_config.loss_mask  # one model turn, no observation appended
    done = asyncio.run(runner_for(DoneWithoutRewardEnv, tok, tiny_engine).run({}, "g", 2))
    assert done.status == Status.FAILED and "done=True) without a reward" in done.metadata["reason"]
