"""Policy losses with their off-policy corrections. All take per-token tensors of one step, already flattened to
the loss tokens' positions, and return (loss, metrics). `logp` carries the gradient; the others do not.

Needs per variant:  bilateral: logp, logp_rollout, adv            (no old-policy recompute, GLM-5 style)
                    icepop / tis / decoupled: + logp_old (the trainer's own logprobs before this step's update)
                    none: logp, logp_rollout, adv (PPO clip on pi_theta / pi_rollout)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from slime_rl.config import LossConfig

NEEDS_OLD_LOGP = {"icepop", "tis", "decoupled"}


@dataclass
class LossInputs:
    logp: torch.Tensor  # [N] current policy, differentiable
    logp_rollout: torch.Tensor  # [N] from the engine that sampled the token
    advantages: torch.Tensor  # [N]
    logp_old: torch.Tensor | None = None  # [N] trainer's policy before this step (no grad)
    logp_ref: torch.Tensor | None = None  # [N] reference policy for the KL penalty
    normalizer: float | None = None  # divide the summed loss by this (all loss tokens of the step); default N


def _ppo_clip(ratio: torch.Tensor, adv: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    clipped = ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
    obj = torch.minimum(ratio * adv, clipped * adv)
    return obj, (obj != ratio * adv).float()


def policy_loss(x: LossInputs, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    n = x.logp.numel()
    norm = x.normalizer or max(n, 1)
    with torch.no_grad():
        diff = (x.logp - x.logp_rollout).abs().mean().item() if n else 0.0
    if cfg.kind in NEEDS_OLD_LOGP and x.logp_old is None:
        raise ValueError(f"loss.kind={cfg.kind} needs logp_old (the trainer's logprobs before the update)")

    keep = torch.ones_like(x.logp)
    clip = torch.zeros_like(x.logp)
    if cfg.kind == "bilateral":
        with torch.no_grad():
            r = torch.exp(x.logp - x.logp_rollout)
            keep = ((r > 1 - cfg.eps_low) & (r < 1 + cfg.eps_high)).float()
        per_token = -(r * keep) * x.advantages * x.logp
    elif cfg.kind == "icepop":
        with torch.no_grad():
            w = torch.exp(x.logp_old - x.logp_rollout)
            keep = ((w >= 1 / cfg.icepop_beta) & (w <= cfg.icepop_beta)).float()
        obj, clip = _ppo_clip(torch.exp(x.logp - x.logp_old), x.advantages, cfg)
        per_token = -keep * obj
    elif cfg.kind == "tis":
        w = torch.exp(x.logp_old - x.logp_rollout).clamp(max=cfg.tis_cap).detach()
        obj, clip = _ppo_clip(torch.exp(x.logp - x.logp_old), x.advantages, cfg)
        per_token = -w * obj
    elif cfg.kind == "decoupled":
        w = torch.exp(x.logp_old - x.logp_rollout).detach()  # pi_prox / pi_behav, pi_prox = pi_old
        obj, clip = _ppo_clip(torch.exp(x.logp - x.logp_old), x.advantages, cfg)
        per_token = -w * obj
    elif cfg.kind == "none":
        obj, clip = _ppo_clip(torch.exp(x.logp - x.logp_rollout), x.advantages, cfg)
        per_token = -obj
    else:  # the config's Literal makes this unreachable from YAML
        raise ValueError(f"unknown loss.kind {cfg.kind!r}")

    loss = per_token.sum() / norm
    kl = 0.0
    if cfg.kl_coef > 0 and x.logp_ref is not None:
        log_ratio = x.logp_ref - x.logp  # k3 estimator of KL(pi_theta || pi_ref), unbiased and non-negative
        kl_tok = torch.exp(log_ratio) - log_ratio - 1
        loss = loss + cfg.kl_coef * kl_tok.sum() / norm
        kl = kl_tok.mean().item()
    metrics = {"masked_frac": 1.0 - keep.mean().item() if n else 0.0,
               "clip_frac": clip.mean().item() if n else 0.0, "logp_diff_mean": diff, "kl": kl}
    return loss, metrics
