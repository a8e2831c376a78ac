"""Code writing with grounded rewards: the model writes a Python function, the judge runs the task's pytest file
against it in the sandbox, and the reward is the fraction of checks passed (the per-check report goes into the
trajectory's metadata). A small task set ships in examples/code/tasks.jsonl.

`env.name: slime_rl_examples.code_env:CodeEnvFactory`: the judge and its sandbox pool are built once per rollout
worker and shared by all its episodes (starting sandboxes is the expensive part), and closed when the worker stops.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slime_rl.config import SandboxConfig
from slime_rl.env_api import Env, EnvFactory, ResetResult, StepResult, read_jsonl

if TYPE_CHECKING:
    from slime_rl.sandboxes.judge import Judge

TASKS = Path(__file__).parent / "code" / "tasks.jsonl"
_BLOCK = re.compile(r"```(?:python)?\n(.*?)```", re.S)


def extract_code(response: str) -> str:
    """The first fenced code block, or the whole response when there is none."""
    m = _BLOCK.search(response)
    return m.group(1) if m else response


class CodeEnv(Env):
    """One episode: single-turn, but scored asynchronously by the worker's shared judge, so it implements
    reset/step directly."""

    name = "code"
    max_turns = 1  # one answer per episode: an aborted request resumes from its tokens like SingleTurnEnv's

    def __init__(self, judge: Judge):
        self.judge = judge
        self.sample: dict[str, Any] = {}

    async def reset(self, sample: dict[str, Any]) -> ResetResult:
        self.sample = sample
        return ResetResult(
            messages=[{"role": "user", "content": f"{sample['question']} Reply with one ```python code block."}]
        )

    async def step(self, response_text: str) -> StepResult:
        from slime_rl.sandboxes.judge import PytestCheck, TaskSpec

        spec = TaskSpec(checks=[PytestCheck(test_code=self.sample["tests"])], per_check_timeout_s=10)
        report = await self.judge.score(spec, extract_code(response_text))
        return StepResult(reward=report.reward, done=True, info={"judge": report.model_dump()})

    @classmethod
    def load_dataset(cls, path: str | Path | None, split: str = "train") -> list[dict[str, Any]]:
        return read_jsonl(path or TASKS)


class CodeEnvFactory(EnvFactory):
    """One judge and one sandbox pool per rollout worker (`env.kwargs: {sandbox: {...}}`, a SandboxConfig)."""

    env_class = CodeEnv

    def __init__(self, sandbox: dict[str, Any] | None = None):
        from slime_rl.sandboxes.base import make_sandbox
        from slime_rl.sandboxes.judge import Judge

        self.sandbox = make_sandbox(SandboxConfig(**(sandbox or {})))
        self.judge = Judge(self.sandbox)

    def new_episode(self) -> CodeEnv:
        return CodeEnv(self.judge)

    async def close(self) -> None:
        await asyncio.to_thread(self.sandbox.close)  # stops the warm sandboxes and waits for their clean-up
