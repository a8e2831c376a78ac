from pathlib import Path
from typing import Any

from pydantic import Field

from .base import Section


class EnvConfig(Section):
    """The environment plug-in: a dotted path `pkg.module:Name` or a `slime_rl.envs` entry-point name."""

    name: str = "slime_rl_examples.math_env:ArithmeticEnv"
    dataset: Path | None = None
    eval_dataset: Path | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    reward_fn: str | None = Field(None, description="optional dotted path to a reward function")
    reward_timeout_s: float = Field(30.0, gt=0)
    step_timeout_s: float = Field(60.0, gt=0)
    max_turns: int = Field(1, ge=1, le=256)
