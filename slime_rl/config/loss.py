"""The policy loss, one model per `loss.kind` (a discriminated union): each kind carries exactly its own options,
so an option of another kind (say `eps_low` with `kind: tis`) is an error at load, not silently ignored."""

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from .base import Section


class _LossCommon(Section):
    """Options every kind has: advantages and the KL penalty (see trainer/losses.py)."""

    kl_coef: float = Field(0.0, ge=0, description="k3 KL penalty against the initial weights (0: no reference model)")
    advantage: Literal["grpo", "reinforce_pp", "reinforce_pp_baseline", "rloo"] = "grpo"
    std_normalize: bool = Field(True, description="grpo: divide by the group's reward std")


class _PPOClip(_LossCommon):
    clip_low: float = Field(0.2, gt=0, lt=1, description="PPO clip: ratios below 1 - clip_low get no gradient")
    clip_high: float = Field(0.28, gt=0, description="PPO clip: ratios above 1 + clip_high get no gradient")


class BilateralLoss(_LossCommon):
    """GLM-5 style: tokens whose ratio to the rollout policy leaves (1 - eps_low, 1 + eps_high) get no gradient."""

    kind: Literal["bilateral"] = "bilateral"
    eps_low: float = Field(0.2, gt=0, lt=1, description="keep tokens with 1 - eps_low < r")
    eps_high: float = Field(0.28, gt=0, description="keep tokens with r < 1 + eps_high")


class IcePopLoss(_PPOClip):
    """PPO clip on pi/pi_old, tokens with pi_old/pi_rollout outside [1/beta, beta] masked."""

    kind: Literal["icepop"] = "icepop"
    beta: float = Field(2.0, gt=1, description="keep tokens with pi_old/pi_rollout in [1/beta, beta]")


class TISLoss(_PPOClip):
    """PPO clip on pi/pi_old times the truncated importance weight min(pi_old/pi_rollout, cap)."""

    kind: Literal["tis"] = "tis"
    cap: float = Field(2.0, gt=0, description="truncate pi_old/pi_rollout at this value")


class DecoupledLoss(_PPOClip):
    """AReaL's decoupled PPO: PPO clip on pi/pi_prox times pi_prox/pi_behav (pi_prox = pi_old)."""

    kind: Literal["decoupled"] = "decoupled"
    cap: float | None = Field(None, gt=0, description="optional cap on pi_prox/pi_behav")


class NoCorrectionLoss(_PPOClip):
    """Plain PPO/GRPO clip against the sampling policy, no off-policy correction."""

    kind: Literal["none"] = "none"


def _kind(value: Any) -> str | None:
    """The tag of a loss section; a section that names no kind is the default kind."""
    if isinstance(value, dict):
        return value.get("kind", DEFAULT_KIND)
    return getattr(value, "kind", None)


DEFAULT_KIND = "bilateral"
LOSS_KINDS = ("bilateral", "icepop", "tis", "decoupled", "none")
LossConfig = Annotated[
    Annotated[BilateralLoss, Tag("bilateral")]
    | Annotated[IcePopLoss, Tag("icepop")]
    | Annotated[TISLoss, Tag("tis")]
    | Annotated[DecoupledLoss, Tag("decoupled")]
    | Annotated[NoCorrectionLoss, Tag("none")],
    Discriminator(_kind),
]
