from typing import Literal

from pydantic import Field

from .base import Section


class LossConfig(Section):
    """Policy loss with its off-policy correction, advantages and staleness control."""

    kind: Literal["bilateral", "icepop", "tis", "decoupled", "none"] = "bilateral"
    eps_low: float = Field(0.2, gt=0, lt=1)
    eps_high: float = Field(0.28, gt=0)
    icepop_beta: float = Field(2.0, gt=1)
    tis_cap: float = Field(2.0, gt=0)
    clip_low: float = Field(0.2, gt=0, lt=1, description="PPO clip for the clipped variants")
    clip_high: float = Field(0.28, gt=0)
    kl_coef: float = Field(0.0, ge=0)
    advantage: Literal["grpo", "reinforce_pp"] = "grpo"
    std_normalize: bool = True
    staleness_tau: int = Field(2, ge=0, description="max policy versions a trajectory may lag the trainer")
