"""Advantages per trajectory (broadcast to its tokens by the train step)."""
from __future__ import annotations

import numpy as np

from slime_rl.config import LossConfig


def grpo(rewards: list[float], std_normalize: bool = True, eps: float = 1e-6) -> list[float]:
    """Group-relative: reward minus the group mean, optionally divided by the group std."""
    r = np.asarray(rewards, dtype=np.float64)
    adv = r - r.mean()
    if std_normalize:
        adv = adv / (r.std() + eps)
    return adv.tolist()


def reinforce_pp(groups: list[list[float]], eps: float = 1e-6) -> list[list[float]]:
    """REINFORCE++ (group-mean baseline, then normalised over the whole batch)."""
    centred = [np.asarray(g, dtype=np.float64) - np.mean(g) for g in groups]
    flat = np.concatenate(centred) if centred else np.zeros(0)
    std = flat.std() if flat.size else 1.0
    return [(c / (std + eps)).tolist() for c in centred]


def compute_advantages(groups: list[list[float]], cfg: LossConfig) -> list[list[float]]:
    if cfg.advantage == "grpo":
        return [grpo(g, cfg.std_normalize) for g in groups]
    if cfg.advantage == "reinforce_pp":
        return reinforce_pp(groups)
    raise ValueError(f"loss.advantage={cfg.advantage!r} needs a value model, which this trainer does not have")
