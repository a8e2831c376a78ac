"""The code-writing example: rewards come from the judge running the task's tests in the sandbox."""
import asyncio

from slime_rl.env_api import load_env_class

GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
BAD = "```python\ndef add(a, b):\n    return a * b\n```"


def test_code_env_rewards_come_from_running_the_tests():
    env_cls = load_env_class("slime_rl_examples.code_env:CodeEnv")
    tasks = env_cls.load_dataset(None)
    assert len(tasks) >= 8 and all({"id", "question", "tests"} <= set(t) for t in tasks)
    task = next(t for t in tasks if t["id"] == "add")

    async def score(response):
        env = env_cls(sandbox={"backend": "bwrap"})
        reset = await env.reset(task)
        assert "add(a, b)" in reset.messages[-1]["content"]
        return await env.step(response)

    good, bad = asyncio.run(score(GOOD)), asyncio.run(score(BAD))
    assert good.done and good.reward == 1.0 and good.info["judge"]["checks"][0]["passed"]
    assert bad.reward == 0.0 and not bad.info["judge"]["checks"][0]["passed"]
