"""The environment plug-in contract: loading by dotted path and entry point with clear errors, and the examples."""

import asyncio

import pytest

from slime_rl.env_api import EnvError, StepResult, load_env_class, load_reward_fn
from slime_rl.rollout.dataset import PromptDataset, load_prompts
from slime_rl_examples.calculator_env import CalculatorEnv, safe_eval
from slime_rl_examples.math_env import ArithmeticEnv
from slime_rl_examples.template_env import TemplateMultiTurnEnv, TemplateSingleTurnEnv


def test_env_loading_by_dotted_path_and_entry_point():
    assert load_env_class("slime_rl_examples.math_env:ArithmeticEnv") is ArithmeticEnv
    assert load_env_class("slime_rl_examples.template_env.TemplateSingleTurnEnv") is TemplateSingleTurnEnv
    assert load_env_class("arithmetic") is ArithmeticEnv  # the slime_rl.envs entry points in pyproject
    assert load_env_class("calculator") is CalculatorEnv
    assert load_env_class("template-single-turn") is TemplateSingleTurnEnv
    assert load_env_class("template-multi-turn") is TemplateMultiTurnEnv


def test_env_loading_errors_name_the_problem():
    with pytest.raises(EnvError, match="cannot import 'no_such_module'"):
        load_env_class("no_such_module:Env")
    with pytest.raises(EnvError, match="has no attribute 'Nope'"):
        load_env_class("slime_rl_examples.math_env:Nope")
    with pytest.raises(EnvError, match="not a subclass of slime_rl.env_api.Env"):
        load_env_class("slime_rl_examples.math_env:make_problems")
    with pytest.raises(EnvError, match="not a dotted path"):
        load_env_class("arithmetic_typo")
    with pytest.raises(EnvError, match="not callable"):
        load_reward_fn("slime_rl.env_api:ENTRY_POINT_GROUP")


def test_dataset_errors_and_worker_striding(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1"}\nnot json\n')
    with pytest.raises(EnvError, match="bad.jsonl:2: not valid JSON"):
        load_prompts(TemplateSingleTurnEnv, bad, "train", {})
    with pytest.raises(EnvError, match="dataset not found"):
        load_prompts(TemplateSingleTurnEnv, tmp_path / "missing.jsonl", "train", {})
    with pytest.raises(EnvError, match="no dataset given"):
        load_prompts(TemplateSingleTurnEnv, None, "train", {})
    with pytest.raises(EnvError, match="empty"):
        PromptDataset([])
    rows = [{"i": i} for i in range(5)]
    workers = [PromptDataset(rows, w, 2, shuffle=True, seed=3) for w in range(2)]
    seen = [w.at(k)[0] for k in range(5) for w in workers]  # two workers, one epoch each... and a bit more
    assert sorted(seen[:5]) == [0, 1, 2, 3, 4]  # the first epoch is split without overlap
    assert sorted(seen[5:]) == [0, 1, 2, 3, 4]  # and the next, reshuffled


def test_math_env_rewards_and_shipped_data():
    env = ArithmeticEnv()
    sample = {"question": "What is 3 + 4?", "answer": "7"}
    assert env.reward(sample, "7") == 1.0
    assert env.reward(sample, "3 + 4 = 7") == 1.0
    strict = ArithmeticEnv(format_bonus=0.2)
    assert strict.reward(sample, "7") == 1.0 and strict.reward(sample, "3 + 4 = 7") == pytest.approx(0.8)
    assert strict.reward(sample, "8") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="format_bonus"):
        ArithmeticEnv(format_bonus=1.5)
    assert env.reward(sample, "The answer is 8") == 0.0
    shipped = ArithmeticEnv.load_dataset(ArithmeticEnv.shipped("train"))
    assert len(shipped) >= 500 and {"id", "question", "answer"} <= set(shipped[0])
    held_out = {r["id"] for r in ArithmeticEnv.load_dataset(ArithmeticEnv.shipped("eval"))}
    assert held_out and not held_out & {r["id"] for r in shipped}


def test_calculator_env_evaluates_tools_safely():
    assert safe_eval("(12 + 3) * 4 - 7 // 2") == 57
    for evil in ("__import__('os')", "2 ** 99999", "x + 1", "open('f')"):
        with pytest.raises(ValueError):
            safe_eval(evil)

    async def episode():
        env = CalculatorEnv()
        await env.reset({"question": "What is 21 * 2?", "answer": "42"})
        first = await env.step("Let me compute. <calc>21 * 2</calc>")
        assert not first.done and first.observation == "<result>42</result>"
        broken = await env.step("<calc>1 / 0</calc>")
        assert not broken.done and broken.observation.startswith("<error>")
        return await env.step("The answer is 42.")

    assert asyncio.run(episode()) == StepResult(done=True, reward=1.0)


def test_template_envs_follow_the_contract():
    single = TemplateSingleTurnEnv()
    assert asyncio.run(single.reset({"question": "Capital of France?", "answer": "Paris"})).messages
    assert asyncio.run(single.step("It is Paris.")).reward == 1.0

    async def guessing():
        env = TemplateMultiTurnEnv(max_guesses=3)
        await env.reset({"secret": 5})
        assert (await env.step("3")).observation == "Higher."
        assert (await env.step("8")).observation == "Lower."
        return await env.step("5")

    last = asyncio.run(guessing())
    assert last.done and last.reward == pytest.approx(0.6)
    assert len(TemplateMultiTurnEnv.load_dataset(None)) == 200
