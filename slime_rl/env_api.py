"""The environment plug-in contract.

A user writes one class in their own module and names it in the config (`env.name: "my_pkg.my_env:MyEnv"`) or
registers it under the `slime_rl.envs` entry-point group (`env.name: my_env`).

Episodes are token-in-token-out: the rollout worker owns the tokens. The environment sees the model's response as
text (decoded once, for scoring and tool parsing; never re-tokenised for training) and answers with observation
text, which the worker tokenises once and appends with loss mask 0.

    class MyEnv(SingleTurnEnv):
        def prompt(self, sample):            # -> chat messages
            return [{"role": "user", "content": sample["question"]}]
        def reward(self, sample, response):  # -> float in [0, 1] usually
            return float(response.strip() == sample["answer"])

Multi-turn environments subclass `Env` and implement `reset` and `step`. An episode is cut after `max_turns` model
turns (the class attribute, 8 for `Env` and 1 for `SingleTurnEnv`; the config's `env.max_turns` overrides it); the
step that ends the episode, by `done=True` or by that cut, must carry a reward. An exception or a timeout inside any
of these methods fails that sample (status "failed", the reason in `metadata["reason"]`), never the worker.

Also honoured: `env.reward_fn` (dotted path to `fn(sample, response_text) -> float`, sync or async) replaces the
environment's final reward; a dataset row may carry `max_new_tokens` to lower the per-turn budget for itself.
See examples/template_env.py for a commented template of both kinds.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Messages = list[dict[str, str]]
ENTRY_POINT_GROUP = "slime_rl.envs"


class EnvError(ValueError):
    """An environment could not be found, built, or returned something outside the contract."""


class ResetResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: Messages = Field(min_length=1, description="chat messages that form the prompt")


class StepResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    observation: str | None = Field(None, description="tool/user text appended before the next model turn")
    observation_role: str = "user"
    reward: float | None = Field(None, description="final reward; required when done")
    done: bool = True
    info: dict[str, Any] = Field(default_factory=dict)


class Env(ABC):
    """One instance per episode. Subclasses may take keyword arguments from `env.kwargs`."""

    name: str = "env"
    max_turns: int = 8  # model turns before the episode is cut; `env.max_turns` in the config overrides it

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    @abstractmethod
    async def reset(self, sample: dict[str, Any]) -> ResetResult: ...

    @abstractmethod
    async def step(self, response_text: str) -> StepResult: ...

    async def close(self) -> None:
        """Release resources (sandboxes, sessions); called once per episode, also after failures."""

    @classmethod
    def load_dataset(cls, path: str | Path | None, split: str = "train", **kwargs: Any) -> list[dict[str, Any]]:
        """Prompt samples. Default: a JSONL file; environments that generate their data override this."""
        if path is None:
            raise EnvError(f"{cls.__name__}: no dataset given (set env.dataset or env.eval_dataset)")
        return read_jsonl(path)


class SingleTurnEnv(Env):
    """prompt -> one response -> reward."""

    max_turns = 1

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.sample: dict[str, Any] = {}

    @abstractmethod
    def prompt(self, sample: dict[str, Any]) -> Messages: ...

    @abstractmethod
    def reward(self, sample: dict[str, Any], response_text: str) -> float: ...

    async def reset(self, sample: dict[str, Any]) -> ResetResult:
        self.sample = sample
        return ResetResult(messages=self.prompt(sample))

    async def step(self, response_text: str) -> StepResult:
        return StepResult(reward=float(self.reward(self.sample, response_text)), done=True)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EnvError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise EnvError(f"{path}:{lineno}: each line must be a JSON object")
            rows.append(row)
    return rows


def resolve_dotted(name: str) -> Any:
    """`pkg.module:Attr` or `pkg.module.Attr` -> the object."""
    module_name, sep, attr = name.partition(":")
    if not sep:
        module_name, _, attr = name.rpartition(".")
    if not module_name or not attr:
        raise EnvError(f"{name!r} is not a dotted path like 'my_pkg.my_env:MyEnv'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvError(f"cannot import {module_name!r} for {name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EnvError(f"module {module_name!r} has no attribute {attr!r}") from None


def load_env_class(name: str) -> type[Env]:
    """Find an environment by entry-point name (group `slime_rl.envs`) or dotted path."""
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    obj = eps[name].load() if name in eps else resolve_dotted(name)
    if not (isinstance(obj, type) and issubclass(obj, Env)):
        raise EnvError(f"{name!r} resolves to {obj!r}, which is not a subclass of slime_rl.env_api.Env")
    return obj


def load_reward_fn(name: str):
    fn = resolve_dotted(name)
    if not callable(fn):
        raise EnvError(f"reward function {name!r} is not callable")
    return fn
