"""One typed configuration tree for a whole run, loaded from YAML with dotted overrides.

    cfg = load_config("examples/math/config.yaml", ["trainer.lr=1e-6", "rollout.group_size=8"])

Unknown keys and bad values raise ConfigError naming the dotted path of the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from ..run_keys import RUN_ID_PATTERN, new_run_id
from .base import Section
from .buffer import BufferConfig
from .dashboard import DashboardConfig
from .engine import EngineConfig
from .env import EnvConfig
from .loss import LOSS_KINDS, BilateralLoss, DecoupledLoss, IcePopLoss, LossConfig, NoCorrectionLoss, TISLoss
from .model import ModelConfig
from .relay import RelayConfig
from .rollout import RolloutConfig, SamplingConfig
from .sandbox import SandboxConfig
from .trainer import ParallelConfig, TrainerConfig
from .watchdog import WatchdogConfig

__all__ = [
    "BilateralLoss",
    "BufferConfig",
    "ConfigError",
    "DashboardConfig",
    "DecoupledLoss",
    "EngineConfig",
    "EnvConfig",
    "IcePopLoss",
    "LossConfig",
    "ModelConfig",
    "NoCorrectionLoss",
    "TISLoss",
    "ParallelConfig",
    "RelayConfig",
    "RolloutConfig",
    "RunConfig",
    "SamplingConfig",
    "SandboxConfig",
    "TrainerConfig",
    "WatchdogConfig",
    "load_config",
    "parse_overrides",
]


class RunConfig(Section):
    name: str = "run"
    run_id: str = Field(
        pattern=RUN_ID_PATTERN,
        description=(
            "the run's Redis namespace: every key and stream of the run carries it, so runs can share one Redis; "
            "unset, it is name plus a random suffix, kept in RUN_DIR/config.yaml so --resume finds its streams"
        ),
    )
    run_dir: Path = Path("runs/latest")
    mode: Literal["async", "sync"] = "async"
    eval_every: int = Field(0, ge=0, description="evaluate held-out prompts every N trainer steps (0: off)")
    eval_samples: int = Field(32, ge=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    engines: EngineConfig = Field(default_factory=EngineConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    loss: LossConfig = Field(default_factory=BilateralLoss)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)

    @model_validator(mode="before")
    @classmethod
    def _assign_run_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("run_id"):
            data = {**data, "run_id": new_run_id(str(data.get("name") or "run"))}
        return data

    @model_validator(mode="after")
    def _buffer_holds_uncommitted_steps(self) -> RunConfig:
        # entries stay pending until the checkpoint that contains them: the buffer must hold that many
        need = (self.trainer.checkpoint_every + self.rollout.staleness_tau + 1) * self.rollout.groups_per_step
        if self.trainer.checkpoint_every and self.buffer.high_water <= need:
            raise ValueError(
                f"buffer.high_water={self.buffer.high_water} must exceed {need} "
                "((trainer.checkpoint_every + rollout.staleness_tau + 1) * rollout.groups_per_step)"
            )
        return self


class ConfigError(ValueError):
    """A configuration problem, with the dotted path of every offending field."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}: {msg}" for p, msg in problems))


# sections that are discriminated unions, and their tags: pydantic puts the tag into an error's location
_UNION_TAGS = {("loss",): set(LOSS_KINDS)}


def _problem(err: dict[str, Any], data: dict[str, Any]) -> tuple[str, str]:
    """(dotted path, message) for one validation error, with a union's tag taken out of the path and named in the
    message instead: `loss.eps_low: not an option of loss.kind=tis`."""
    loc = tuple(err["loc"])
    for section, tags in _UNION_TAGS.items():
        n = len(section)
        if loc[:n] != section:
            continue
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            return _dotted(section + ("kind",)), err["msg"]
        if len(loc) > n and loc[n] in tags:
            path = _dotted(section + loc[n + 1 :])
            if err["type"] == "extra_forbidden":
                return path, f"not an option of {_dotted(section)}.kind={loc[n]}"
            return path, err["msg"]
    return _dotted(loc), "unknown key" if err["type"] == "extra_forbidden" else err["msg"]


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b.c=value` strings -> nested dict; values are parsed as YAML scalars (1e-6, true, [1,2])."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError([(key or item, f"override {item!r} is not of the form dotted.key=value")])
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([(key, "conflicts with another override")])
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_problem(err, data) for err in exc.errors()]) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([(str(path), f"cannot read config: {exc}")]) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([(str(path), "top level must be a mapping")])
        data = loaded or {}
    return build_config(_merge(data, parse_overrides(overrides or [])))


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
