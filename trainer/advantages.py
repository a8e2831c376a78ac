"""Outcome advantages, one per trajectory (the train step broadcasts it to the trajectory's loss tokens).

    grpo                    r - mean(group), divided by the group's (population) std when std_normalize
    rloo                    r - mean of the *other* samples of the group (leave-one-out baseline)
    reinforce_pp            REINFORCE++: rewards whitened over the whole batch (no group baseline)
    reinforce_pp_baseline   REINFORCE++-baseline: r - mean(group), then divided by the std over the whole batch

A value model (PPO/GAE) is not part of this trainer; the config only offers critic-free estimators.
"""

from __future__ import annotations

import numpy as np

from slime_rl.config import LossConfig

EPS = 1e-6


def grpo(rewards: list[float], std_normalize: bool = True) -> list[float]:
    r = np.asarray(rewards, dtype=np.float64)
    adv = r - r.mean()
    if std_normalize:
        adv = adv / (r.std() + EPS)
    return adv.tolist()


def rloo(rewards: list[float]) -> list[float]:
    r = np.asarray(rewards, dtype=np.float64)
    if r.size < 2:
        return [0.0] * r.size  # no other sample to compare with
    return (r - (r.sum() - r) / (r.size - 1)).tolist()


def reinforce_pp(groups: list[list[float]]) -> list[list[float]]:
    flat = np.concatenate([np.asarray(g, dtype=np.float64) for g in groups]) if groups else np.zeros(0)
    if flat.size == 0:
        return [[] for _ in groups]
    mean, std = flat.mean(), flat.std()
    return [((np.asarray(g, dtype=np.float64) - mean) / (std + EPS)).tolist() for g in groups]


def reinforce_pp_baseline(groups: list[list[float]]) -> list[list[float]]:
    centred = [np.asarray(g, dtype=np.float64) - np.mean(g) for g in groups]
    flat = np.concatenate(centred) if centred else np.zeros(0)
    std = flat.std() if flat.size else 1.0
    return [(c / (std + EPS)).tolist() for c in centred]


def compute_advantages(groups: list[list[float]], cfg: LossConfig) -> list[list[float]]:
    """Rewards per group -> advantages per group, same shape."""
    for i, g in enumerate(groups):
        if not g:
            raise ValueError(f"compute_advantages: group {i} has no rewards")
        if not np.all(np.isfinite(g)):
            raise ValueError(f"compute_advantages: group {i} has a non-finite reward: {g}")
    if cfg.advantage == "grpo":
        return [grpo(g, cfg.std_normalize) for g in groups]
    if cfg.advantage == "rloo":
        return [rloo(g) for g in groups]
    if cfg.advantage == "reinforce_pp":
        return reinforce_pp(groups)
    if cfg.advantage == "reinforce_pp_baseline":
        return reinforce_pp_baseline(groups)
    raise ValueError(f"loss.advantage={cfg.advantage!r} is not a known estimator")
