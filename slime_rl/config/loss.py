from typing import Literal

from pydantic import Field

from .base import Section


class LossConfig(Section):
    """Policy loss with its off-policy correction, advantages and staleness control (see trainer/losses.py)."""

    kind: Literal["bilateral", "icepop", "tis", "decoupled", "none"] = "bilateral"
    eps_low: float = Field(0.2, gt=0, lt=1, description="bilateral: keep tokens with 1 - eps_low < r")
    eps_high: float = Field(0.28, gt=0, description="bilateral: keep tokens with r < 1 + eps_high")
    icepop_beta: float = Field(2.0, gt=1, description="icepop: keep tokens with pi_old/pi_rollout in [1/beta, beta]")
    tis_cap: float = Field(2.0, gt=0, description="tis: truncate pi_old/pi_rollout at this value")
    decoupled_cap: float | None = Field(None, gt=0, description="decoupled: optional cap on pi_prox/pi_behav")
    clip_low: float = Field(0.2, gt=0, lt=1, description="PPO clip for the clipped variants")
    clip_high: float = Field(0.28, gt=0)
    kl_coef: float = Field(0.0, ge=0, description="k3 KL penalty against the initial weights (0: no reference model)")
    advantage: Literal["grpo", "reinforce_pp", "reinforce_pp_baseline", "rloo"] = "grpo"
    std_normalize: bool = Field(True, description="grpo: divide by the group's reward std")
    staleness_tau: int = Field(2, ge=0, description="max policy versions a trajectory may lag the trainer")

