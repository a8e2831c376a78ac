"""The environment plug-in contract.

A user writes one class in their own module and names it in the config (`env.name: "my_pkg.my_env:MyEnv"`) or
registers it under the `slime_rl.envs` entry-point group (`env.name: my_env`). `env.name` names either

- an `Env` subclass (the simple path): one instance per episode, built as `MyEnv(**env.kwargs)`; or
- an `EnvFactory` subclass: built once per rollout worker (and once for the evaluation worker) as
  `MyFactory(**env.kwargs)`; it owns what episodes share (a judge, an HTTP client, a sandbox pool), hands each
  episode a fresh `Env` from `new_episode()`, and releases the shared resources in `close()`, called once when the
  worker stops. Expensive things belong here, never in an episode.

`env.kwargs` go to that constructor only and `env.dataset_kwargs` to `load_dataset` only. Both are bound to the
signature once, at start-up: an unknown key or a missing argument is an `EnvError` naming the config field and the
key, raised before any episode runs (a constructor that declares `**kwargs` opts out of the check).

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
See examples/template_env.py for a commented template of both kinds and of a factory.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
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
    """One instance per episode. On the simple path its constructor's keyword arguments come from `env.kwargs`; under
    a factory, the factory builds it (e.g. handing it a shared judge)."""

    name: str = "env"
    max_turns: int = 8  # model turns before the episode is cut; `env.max_turns` in the config overrides it

    @abstractmethod
    async def reset(self, sample: dict[str, Any]) -> ResetResult: ...

    @abstractmethod
    async def step(self, response_text: str) -> StepResult: ...

    async def close(self) -> None:
        """Release resources (sandboxes, sessions); called once per episode, also after failures."""

    @classmethod
    def load_dataset(cls, path: str | Path | None, split: str = "train") -> list[dict[str, Any]]:
        """Prompt samples. Default: a JSONL file; environments that generate their data override this and take
        their options (`env.dataset_kwargs`) as extra keyword arguments."""
        if path is None:
            raise EnvError(f"{cls.__name__}: no dataset given (set env.dataset or env.eval_dataset)")
        return read_jsonl(path)


class SingleTurnEnv(Env):
    """prompt -> one response -> reward."""

    max_turns = 1

    def __init__(self) -> None:
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


class EnvFactory(ABC):
    """Built once per rollout worker: owns what every episode shares (a judge, an HTTP client, a sandbox pool) and
    defines the dataset; `new_episode()` returns the per-episode `Env`. Constructor keyword arguments come from
    `env.kwargs`; `close()` is called once when the worker stops."""

    env_class: type[Env]  # what new_episode returns: its `name` and `max_turns` are the run's

    @abstractmethod
    def new_episode(self) -> Env: ...

    async def close(self) -> None:
        """Release the shared resources; called once, when the worker stops."""

    @classmethod
    def load_dataset(cls, path: str | Path | None, split: str = "train", **kwargs: Any) -> list[dict[str, Any]]:
        """The episodes' dataset (a class method: the launcher reads held-out rows without starting the shared
        resources). Default: `env_class.load_dataset`."""
        return cls.env_class.load_dataset(path, split, **kwargs)


class SimpleEnvFactory(EnvFactory):
    """The simple path: `env.name` names an `Env` subclass, built per episode with `env.kwargs`."""

    def __init__(self, env_class: type[Env], kwargs: dict[str, Any]):
        self.env_class, self.kwargs = env_class, dict(kwargs)

    def new_episode(self) -> Env:
        return self.env_class(**self.kwargs)


EnvPlugin = type[Env] | type[EnvFactory]


def check_kwargs(fn: Any, kwargs: dict[str, Any], field: str, skip: int = 0) -> None:
    """Bind config keyword arguments to `fn`'s signature (its first `skip` parameters are the caller's): an unknown
    key or a missing required argument is an EnvError naming `field`, once at start-up, not a TypeError per
    episode. A signature with `**kwargs` takes any key on purpose."""
    what = getattr(fn, "__qualname__", repr(fn))
    params = list(inspect.signature(fn).parameters.values())[skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in named:
            close = difflib.get_close_matches(key, named, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise EnvError(f"{field}: unknown key {key!r} for {what} (it takes: {', '.join(named) or 'nothing'}){hint}")
    missing = [p.name for p in params if p.name in named and p.default is p.empty and p.name not in kwargs]
    if missing:
        raise EnvError(f"{field}: {what} needs {', '.join(map(repr, missing))}")


def build_env_factory(plugin: EnvPlugin, kwargs: dict[str, Any]) -> EnvFactory:
    """The worker's factory for `env.name` with `env.kwargs` checked against the constructor."""
    check_kwargs(plugin, kwargs, "env.kwargs")
    if issubclass(plugin, Env):
        return SimpleEnvFactory(plugin, kwargs)
    _env_class_of(plugin)
    return plugin(**kwargs)


def dataset_loader(plugin: EnvPlugin):
    """The method that consumes `env.dataset_kwargs` (a factory that keeps the default defers to its env_class)."""
    if issubclass(plugin, EnvFactory) and plugin.load_dataset.__func__ is EnvFactory.load_dataset.__func__:
        return _env_class_of(plugin).load_dataset
    return plugin.load_dataset


def _env_class_of(factory: type[EnvFactory]) -> type[Env]:
    env_class = getattr(factory, "env_class", None)
    if not (isinstance(env_class, type) and issubclass(env_class, Env)):
        raise EnvError(f"{factory.__name__}.env_class must be the Env subclass its new_episode() returns")
    return env_class


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


def load_env_class(name: str) -> EnvPlugin:
    """Find an environment (an Env or EnvFactory subclass) by entry-point name (group `slime_rl.envs`) or dotted
    path."""
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    obj = eps[name].load() if name in eps else resolve_dotted(name)
    if not (isinstance(obj, type) and issubclass(obj, (Env, EnvFactory))):
        raise EnvError(
            f"{name!r} resolves to {obj!r}, which is not a subclass of slime_rl.env_api.Env "
            f"(or slime_rl.env_api.EnvFactory)"
        )
    return obj


def load_reward_fn(name: str):
    fn = resolve_dotted(name)
    if not callable(fn):
        raise EnvError(f"reward function {name!r} is not callable")
    return fn
