"""Code writing with grounded rewards: the model writes a Python function, the judge runs the task's pytest file
against it in the sandbox, and the reward is the fraction of checks passed (the per-check report goes into the
trajectory's metadata). A small task set ships in examples/code/tasks.jsonl."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from slime_rl.config import SandboxConfig
from slime_rl.env_api import Env, ResetResult, StepResult, read_jsonl

TASKS = Path(__file__).parent / "code" / "tasks.jsonl"
_BLOCK = re.compile(r"```(?:python)?\n(.*?)```", re.S)


def extract_code(response: str) -> str:
    """The first fenced code block, or the whole response when there is none."""
    m = _BLOCK.search(response)
    return m.group(1) if m else response


class CodeEnv(Env):
    """Single-turn, but scored asynchronously by the judge, so it implements reset/step directly."""

    name = "code"

    def __init__(self, sandbox: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.sample: dict[str, Any] = {}
        from slime_rl.sandboxes.base import make_sandbox
        from slime_rl.sandboxes.judge import Judge

        self.judge = Judge(make_sandbox(SandboxConfig(**(sandbox or {}))))

    async def reset(self, sample: dict[str, Any]) -> ResetResult:
        self.sample = sample
        return ResetResult(messages=[{"role": "user",
                                      "content": f"{sample['question']} Reply with one ```python code block."}])

    async def step(self, response_text: str) -> StepResult:
        from slime_rl.sandboxes.judge import PytestCheck, TaskSpec

        spec = TaskSpec(checks=[PytestCheck(test_code=self.sample["tests"])], per_check_timeout_s=10)
        report = await self.judge.score(spec, extract_code(response_text))
        return StepResult(reward=report.reward, done=True, info={"judge": report.model_dump()})

    @classmethod
    def load_dataset(cls, path: str | Path | None, split: str = "train", **_: Any) -> list[dict[str, Any]]:
        return read_jsonl(path or TASKS)
