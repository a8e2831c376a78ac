"""The end-of-run summary: what a user checks first (did reward move, how fast, how stale)."""
from __future__ import annotations

from collections import Counter
from typing import Any

from .config import RunConfig


def summarize(cfg: RunConfig, history: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any],
              rollout: dict[str, Any], wall_s: float, restarts: dict[str, int], buffer: dict[str, int],
              engine_versions: dict[str, int]) -> dict[str, Any]:
    lags = staleness_hist(history)
    trained_tokens = sum(m.get("tokens", 0) for m in history)
    train_time = sum(m.get("step_time_s", 0.0) for m in history)
    return {
        "mode": cfg.mode,
        "steps": len(history),
        "final_version": history[-1]["version"] if history else 0,
        "heldout_reward_before": before["reward_mean"],
        "heldout_reward_after": after["reward_mean"],
        "heldout_reward_delta": after["reward_mean"] - before["reward_mean"],
        "train_reward_first_steps": _mean([m.get("reward_mean") for m in history[:3]]),
        "train_reward_last_steps": _mean([m.get("reward_mean") for m in history[-3:]]),
        "rollout_tokens_per_s": rollout.get("tokens_per_s", 0.0),
        "trainer_tokens_per_s": trained_tokens / train_time if train_time else 0.0,
        "staleness_mean": mean_lag(lags),
        "staleness_hist": dict(sorted(lags.items())),
        "dropped_stale": sum(m.get("dropped_stale", 0) for m in history),
        "weight_pushes": sum(1 for m in history if "push" in m),
        "last_pushed_version": max((m["push"]["version"] for m in history if "push" in m), default=0),
        "engine_versions": engine_versions,
        "trained_groups": sum(m.get("groups", 0) - m.get("dropped_groups", 0) for m in history),
        "dropped_stale_groups": sum(m.get("dropped_groups", 0) for m in history),
        "buffer": buffer,
        "restarts": restarts,
        "wall_s": wall_s,
    }


def staleness_hist(history: list[dict[str, Any]]) -> Counter[int]:
    """Trajectories per lag (trainer version - version of the first token) over the trainer steps."""
    lags: Counter[int] = Counter()
    for m in history:
        for lag, count in (m.get("staleness_hist") or {}).items():
            lags[int(lag)] += int(count)
    return lags


def mean_lag(lags: Counter[int]) -> float:
    n = sum(lags.values())
    return sum(lag * c for lag, c in lags.items()) / n if n else 0.0


def _mean(values: list[Any]) -> float:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")
