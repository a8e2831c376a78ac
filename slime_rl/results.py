"""Typed results that cross process boundaries: the trainer's step, a weight push, a held-out evaluation.

A call to the trainer's `train_step` ends in one of three explicit states: `no_data_yet` (fewer than a step's groups
arrived; they are held for the next call), `nothing_trainable` (a batch was read, but every group failed or was
filtered out: no optimizer step) and `trained`. `TrainStepResult.record()` is the flat record that metrics.jsonl and
the dashboard carry (the names listed in slime_rl/metrics.py).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepState(str, Enum):
    NO_DATA_YET = "no_data_yet"
    NOTHING_TRAINABLE = "nothing_trainable"
    TRAINED = "trained"


class BatchStats(_Result):
    """What a batch the trainer read held, and what the staleness filter made of it."""

    groups: int
    samples: int
    trainable_groups: int = Field(description="groups that meet TrajectoryGroup.trainable, kept or not")
    kept: int
    kept_groups: int
    padded: int
    dropped_stale: int
    dropped_invalid: int
    dropped_with_group: int
    dropped_groups: int
    staleness_hist: dict[str, int] = Field(default_factory=dict, description="lag -> trajectories")
    failure_reasons: dict[str, int] = Field(default_factory=dict, description="untrainable reason -> samples")
    reward_mean: float
    response_len_mean: float


class UpdateStats(_Result):
    """The optimizer step taken on a batch (token means over the step's loss tokens)."""

    loss: float
    masked_frac: float
    clip_frac: float
    clip_frac_high: float
    clip_frac_low: float
    is_weight_mean: float
    logp_diff_mean: float
    kl: float
    grad_norm: float
    lr: float
    update_skipped: float
    tokens: int
    loss_tokens: int
    micro_batches: int
    padding_waste: float
    budget_fill: float
    step_time_s: float
    tokens_per_s: float


class PushReceipt(_Result):
    """A weight publication: what the trainer handed to the relay, and how long it was blocked."""

    version: int
    blocked_s: float = 0.0
    background: bool = False  # handed to the publishing thread; its own receipt comes back as `previous`
    bytes: int | None = None
    accepted: bool | None = None  # False: the relay already held a newer version
    published_at: float | None = None
    previous: PushReceipt | None = None
    propagation_s: dict[str, float] | None = None  # engine url -> seconds until it held the version (sync mode)


class TrainStepResult(_Result):
    state: StepState
    step: int
    version: int
    batch: BatchStats | None = None  # None only when no data came yet
    update: UpdateStats | None = None  # only when trained
    checkpoint: str | None = None
    trained_ids: list[str] = Field(default_factory=list)
    dropped_ids: list[str] = Field(default_factory=list)
    push: PushReceipt | None = None  # set by the loop after a trained step

    @property
    def trained(self) -> bool:
        return self.state is StepState.TRAINED

    def record(self) -> dict[str, Any]:
        """The flat metrics record: batch and update numbers under their own names, no id lists."""
        out: dict[str, Any] = {
            "state": self.state.value,
            "stepped": self.trained,
            "step": self.step,
            "version": self.version,
        }
        for part in (self.batch, self.update):
            if part is not None:
                out.update(part.model_dump())
        if self.checkpoint:
            out["checkpoint"] = self.checkpoint
        if self.push is not None:
            out["push"] = self.push.model_dump(exclude_none=True)
        return out


class EvalResult(_Result):
    """A held-out evaluation: one greedy episode per prompt."""

    reward_mean: float
    samples: int
    failed: int = 0
    failure_reasons: dict[str, int] = Field(default_factory=dict)
    response_len_mean: float = 0.0
    eval_s: float = 0.0
