"""Policy losses with their off-policy corrections.

All inputs are per-token tensors over the loss tokens of a micro-batch (flattened). Only `logp` (pi_theta) carries
the gradient. Notation: r = pi_theta / pi_rollout, w = pi_old / pi_rollout, rho = pi_theta / pi_old, and
ppo(x, A) = min(x * A, clip(x, 1 - clip_low, 1 + clip_high) * A).

    kind        needs                           per-token objective (maximised)
    bilateral   logp, logp_rollout, adv         sg(f(r)) * A * logp,  f(r) = r if 1 - eps_low < r < 1 + eps_high
                                                else 0 (strict: a token on an edge is masked); GLM-5 style, no pi_old
    icepop      + logp_old                      1[1/beta <= w <= beta] * ppo(rho, A)   (closed band)
    tis         + logp_old                      min(w, cap) * ppo(rho, A)
    decoupled   + logp_old                      w * ppo(rho, A)   (AReaL: pi_prox = pi_old; w optionally capped)
    none        logp, logp_rollout, adv         ppo(r, A)   (plain PPO/GRPO clip against the sampling policy)
    kl_coef>0   + logp_ref                      minus kl_coef * k3(pi_theta || pi_ref)

`NEEDS_OLD_LOGP` names the variants that need pi_old, so the train step provides it only for them. The loss is
-sum(objective) / normalizer, where the normalizer is the number of loss tokens of the whole optimizer step (so
micro-batches add up to one token mean); metrics are means over this call's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slime_rl.config import LossConfig
from slime_rl.config.loss import _PPOClip

NEEDS_OLD_LOGP = frozenset({"icepop", "tis", "decoupled"})


@dataclass
class LossInputs:
    logp: torch.Tensor  # [N] current policy, differentiable
    logp_rollout: torch.Tensor  # [N] the engine's logprob of each sampled token
    advantages: torch.Tensor  # [N]
    logp_old: torch.Tensor | None = None  # [N] trainer's logprobs before this step's update (no grad)
    logp_ref: torch.Tensor | None = None  # [N] reference policy, for the KL penalty
    normalizer: float | None = None  # divide the summed loss by this; default N


def _ppo(ratio: torch.Tensor, adv: torch.Tensor, cfg: _PPOClip) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate and where the clip bound it from above / below (there the gradient is zero)."""
    obj = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * adv)
    with torch.no_grad():
        high = (adv > 0) & (ratio > 1 + cfg.clip_high)
        low = (adv < 0) & (ratio < 1 - cfg.clip_low)
    return obj, high, low


def _check(x: LossInputs, cfg: LossConfig) -> None:
    n = x.logp.shape
    for name in ("logp_rollout", "advantages", "logp_old", "logp_ref"):
        t = getattr(x, name)
        if t is not None and t.shape != n:
            raise ValueError(f"policy_loss: {name} has shape {tuple(t.shape)}, logp has {tuple(n)}")
    if cfg.kind in NEEDS_OLD_LOGP and x.logp_old is None:
        raise ValueError(f"loss.kind={cfg.kind} needs logp_old (the trainer's logprobs before the update)")
    if cfg.kl_coef > 0 and x.logp_ref is None:
        raise ValueError("loss.kl_coef > 0 needs logp_ref (the reference policy's logprobs)")


def policy_loss(x: LossInputs, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    _check(x, cfg)
    n = x.logp.numel()
    adv = x.advantages.to(x.logp.dtype)
    zeros = torch.zeros_like(x.logp, dtype=torch.bool)
    masked, high, low = zeros, zeros, zeros
    with torch.no_grad():
        log_r = x.logp - x.logp_rollout
        weight = torch.ones_like(x.logp)  # the importance weight applied, for the metrics

    if cfg.kind == "bilateral":
        with torch.no_grad():
            r = log_r.exp()
            keep = (r > 1 - cfg.eps_low) & (r < 1 + cfg.eps_high)
            masked, weight = ~keep, torch.where(keep, r, torch.zeros_like(r))
        objective = weight * adv * x.logp
    elif cfg.kind == "none":
        objective, high, low = _ppo(torch.exp(x.logp - x.logp_rollout), adv, cfg)
    else:
        with torch.no_grad():
            w = torch.exp(x.logp_old - x.logp_rollout)
            if cfg.kind == "icepop":
                keep = (w >= 1 / cfg.beta) & (w <= cfg.beta)
                masked, weight = ~keep, keep.to(w.dtype)
            elif cfg.kind == "tis":
                weight = w.clamp(max=cfg.cap)
            else:  # decoupled: the behaviour weight pi_prox / pi_behav
                weight = w if cfg.cap is None else w.clamp(max=cfg.cap)
        ppo, high, low = _ppo(torch.exp(x.logp - x.logp_old), adv, cfg)
        objective = weight * ppo

    norm = x.normalizer or max(n, 1)
    loss = -objective.sum() / norm
    kl = 0.0
    if cfg.kl_coef > 0:
        log_ratio = x.logp_ref - x.logp  # k3 estimator of KL(pi_theta || pi_ref): unbiased, non-negative
        kl_tok = torch.exp(log_ratio) - log_ratio - 1
        loss = loss + cfg.kl_coef * kl_tok.sum() / norm
        kl = _mean(kl_tok.detach())
    metrics = {
        "masked_frac": _mean(masked),
        "clip_frac": _mean(high | low),
        "clip_frac_high": _mean(high),
        "clip_frac_low": _mean(low),
        "is_weight_mean": _mean(weight),
        "logp_diff_mean": _mean(log_r.abs()),
        "kl": kl,
    }
    return loss, metrics


def _mean(t: torch.Tensor) -> float:
    return float(t.float().mean()) if t.numel() else 0.0
