"""The end-of-run summary: what a user checks first (did reward move, how fast, how stale)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .config import RunConfig
from .results import EvalResult, TrainStepResult


def summarize(
    cfg: RunConfig,
    history: list[TrainStepResult],
    before: EvalResult,
    after: EvalResult,
    rollout: dict[str, Any],
    wall_s: float,
    restarts: dict[str, int],
    buffer: dict[str, int],
    engine_versions: dict[str, int],
) -> dict[str, Any]:
    """`history`: the trained steps. The summary is what summary.json holds."""
    lags = staleness_hist(history)
    updates = [r.update for r in history if r.update is not None]
    batches = [r.batch for r in history if r.batch is not None]
    trained_tokens = sum(u.tokens for u in updates)
    train_time = sum(u.step_time_s for u in updates)
    pushes = [r.push for r in history if r.push is not None]
    return {
        "mode": cfg.mode,
        "steps": len(history),
        "final_version": history[-1].version if history else 0,
        "heldout_reward_before": before.reward_mean,
        "heldout_reward_after": after.reward_mean,
        "heldout_reward_delta": after.reward_mean - before.reward_mean,
        "train_reward_first_steps": _mean([b.reward_mean for b in batches[:3]]),
        "train_reward_last_steps": _mean([b.reward_mean for b in batches[-3:]]),
        "rollout_tokens_per_s": rollout.get("tokens_per_s", 0.0),
        "trainer_tokens_per_s": trained_tokens / train_time if train_time else 0.0,
        "staleness_mean": mean_lag(lags),
        "staleness_hist": dict(sorted(lags.items())),
        "dropped_stale": sum(b.dropped_stale for b in batches),
        "weight_pushes": len(pushes),
        "last_pushed_version": max((p.version for p in pushes), default=0),
        "engine_versions": engine_versions,
        "trained_groups": sum(b.groups - b.dropped_groups for b in batches),
        "dropped_stale_groups": sum(b.dropped_groups for b in batches),
        "buffer": buffer,
        "restarts": restarts,
        "wall_s": wall_s,
    }


def staleness_hist(history: list[TrainStepResult]) -> Counter[int]:
    """Trajectories per lag (trainer version - version of the first token) over the trainer steps."""
    lags: Counter[int] = Counter()
    for r in history:
        for lag, count in (r.batch.staleness_hist if r.batch is not None else {}).items():
            lags[int(lag)] += int(count)
    return lags


def mean_lag(lags: Counter[int]) -> float:
    n = sum(lags.values())
    return sum(lag * c for lag, c in lags.items()) / n if n else 0.0


def _mean(values: list[Any]) -> float:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")
