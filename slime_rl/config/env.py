from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from .base import Section


class EnvConfig(Section):
    """The environment plug-in: a dotted path `pkg.module:Name` or a `slime_rl.envs` entry-point name, naming an
    `Env` subclass (one instance per episode) or an `EnvFactory` subclass (one per worker, owning shared resources)."""

    name: str = "slime_rl_examples.math_env:ArithmeticEnv"
    dataset: Path | None = None
    eval_dataset: Path | None = None
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of env.name's constructor only; checked against its signature at start-up",
    )
    dataset_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of its load_dataset only (e.g. how to generate rows); checked the same way",
    )
    reward_fn: str | None = Field(None, description="optional dotted path to a reward function")
    reward_timeout_s: float = Field(30.0, gt=0)
    step_timeout_s: float = Field(60.0, gt=0)
    max_turns: int | None = Field(
        None,
        ge=1,
        le=256,
        description="model turns after which an episode is cut "
        "(its last step's reward counts); unset: the environment class's `max_turns`",
    )

    @field_validator("dataset", "eval_dataset")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        # resolved where the config is loaded, so Ray actors started in another directory find the same file
        return v.resolve() if v is not None and not v.is_absolute() and v.exists() else v
