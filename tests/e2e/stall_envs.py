"""Environments and reward functions that make every sample fail, for the watchdog's end-to-end tests (imported by
the run's processes through PYTHONPATH)."""

from __future__ import annotations

from typing import Any

from slime_rl.env_api import Env, ResetResult, StepResult


class NeverRewardEnv(Env):
    """A multi-turn environment that never returns a reward: every episode is cut at the turn limit and fails."""

    name = "never-reward"

    async def reset(self, sample: dict[str, Any]) -> ResetResult:
        return ResetResult(messages=[{"role": "user", "content": sample["question"]}])

    async def step(self, response_text: str) -> StepResult:
        return StepResult(observation="Try again.", done=False)

    @classmethod
    def load_dataset(cls, path: Any, split: str = "train", **kwargs: Any) -> list[dict[str, Any]]:
        return [{"id": f"{split}-{i}", "question": f"Say {i}."} for i in range(16)]


def raising_reward(sample: dict[str, Any], response_text: str) -> float:
    raise ConnectionError("reward service at 10.0.0.7:8000 refused the connection")
