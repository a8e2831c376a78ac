"""`slime-rl bench ablation`: staleness tau x off-policy loss, real async runs of the math demo on CPU.

Every cell is one full `train()` (fresh Redis, engines, trainer; one Ray session shared by all cells) with the same
sample budget (max_steps x groups_per_step x group_size trajectories). Per cell: final held-out (greedy) reward,
token-weighted masked-token fraction and mean |logp_train - logp_rollout| over the run's steps, PPO clip fraction,
and the staleness the trainer observed (histogram + mean), so a reader can check the data were really stale.

How staleness arises: in async mode a rollout worker starts a group while
    started_groups <= (v + tau + 1) * groups_per_step     (v: policy version the engines hold)
so when generation outpaces the trainer, the buffer fills up to tau steps ahead with data made by old weights and
the trainer consumes it up to tau versions late. On the 2-core dev machine a trainer step (fwd+bwd+Adam of the 135M
model) takes ~4-6 s and a push reaches the engine ~1-4 s later, against ~1-2 s to generate a step's 2 groups of
16-token answers, so the rollout runs ahead to its cap: lags go 0, 1, ..., tau over the first tau steps, then stay
at tau (the 16-step trl comparison at tau=2 saw lags {0: 16, 1: 16, 2: 224} samples; a 3-step quick run sees lags
0-2 whatever tau >= 2).
Nothing is forced: the observed staleness (histogram, mean, max) is recorded per cell, and a cell whose data were
not stale shows it.
Weights are pushed every step (relay.push_every=1), so the final evaluation sees the final weights.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

CONFIG = "examples/math/config.yaml"
PLOT_PATH = Path("bench/results/ablation.png")
RUNS_DIR = Path("runs/ablation")
NOTES = (
    "none is PPO-clipped against the rollout policy (ratio pi_theta/pi_rollout), not a bare policy gradient. "
    "none and tis never mask tokens (masked_frac is 0 by construction; none's PPO clip shows in clip_frac). "
    "staleness_* is the lag (trainer version - version of the first generated token) of every trajectory "
    "that reached the trainer; within the first tau steps it cannot exceed the step index."
)
RETRIES = 1  # extra attempts for a failed cell
# the per-cell numbers averaged over seeds in the table
SCALARS = (
    "heldout_reward",
    "heldout_reward_before",
    "masked_frac",
    "logp_diff_mean",
    "clip_frac",
    "staleness_mean",
    "staleness_max",
    "dropped_stale",
    "trained_samples",
    "train_reward_last_steps",
    "wall_s",
)


@dataclass(frozen=True)
class Plan:
    taus: tuple[int, ...]
    losses: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    eval_samples: int

    def cells(self) -> list[tuple[int, str, int]]:
        return [(tau, loss, seed) for tau in self.taus for loss in self.losses for seed in self.seeds]


QUICK = Plan(taus=(0, 4), losses=("none", "bilateral"), seeds=(0,), steps=3, eval_samples=16)
# Wall time on the quiet 2-core dev machine (2026-12-01 code): a 16-step demo run took ~150 s end to end at tau=2
# (start-up and two 64-prompt evaluations included); tau=0 waits for each push, so expect ~3 min per cell:
# the full grid's 32 cells take ~1.5 h, one seed (`--seeds 1`) ~50 min. Quick: 4 cells, a few minutes.
FULL = Plan(taus=(0, 2, 4, 8), losses=("none", "tis", "icepop", "bilateral"), seeds=(0, 1), steps=16, eval_samples=64)


def cell_overrides(plan: Plan, tau: int, loss: str, seed: int, run_dir: Path) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"name=ablation-tau{tau}-{loss}-s{seed}",
        f"loss.kind={loss}",
        f"rollout.staleness_tau={tau}",
        f"trainer.max_steps={plan.steps}",
        f"eval_samples={plan.eval_samples}",
        f"rollout.seed={seed}",
        f"trainer.seed={1234 + seed}",
        "relay.push_every=1",
        # no checkpoints (entries are acknowledged after each step), no dashboard: nothing but the run
        "trainer.checkpoint_every=0",
        "dashboard.enabled=false",
        "eval_every=0",
    ]


def cell_metrics(summary: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's numbers from its summary.json and its trainer records (metrics.jsonl, kind "trainer")."""
    stepped = [m for m in steps if m.get("stepped")]
    hist = Counter({int(k): int(v) for k, v in (summary.get("staleness_hist") or {}).items()})
    return {
        "heldout_reward": summary["heldout_reward_after"],
        "heldout_reward_before": summary["heldout_reward_before"],
        # token-weighted over the run: a step with more loss tokens says more about the fraction
        "masked_frac": _token_mean(stepped, "masked_frac"),
        "logp_diff_mean": _token_mean(stepped, "logp_diff_mean"),
        "clip_frac": _token_mean(stepped, "clip_frac"),
        "staleness_mean": summary.get("staleness_mean", 0.0),
        "staleness_max": max(hist, default=0),
        "staleness_hist": dict(sorted(hist.items())),
        "dropped_stale": summary.get("dropped_stale", 0),
        "trained_samples": sum(int(m.get("kept", 0)) for m in stepped),
        "steps": len(stepped),
        "train_reward_last_steps": summary.get("train_reward_last_steps"),
        "wall_s": summary.get("wall_s"),
    }


def _token_mean(steps: list[dict[str, Any]], key: str) -> float | None:
    pairs = [(float(m[key]), int(m.get("loss_tokens", 0))) for m in steps if key in m]
    weight = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / weight if weight else None


def aggregate(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and the held-out reward's std) over the seeds of each (tau, loss); failed cells are left out."""
    by_key: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for c in cells:
        if "metrics" in c:
            by_key.setdefault((c["tau"], c["loss"]), []).append(c["metrics"])
    table = []
    for (tau, loss), runs in sorted(by_key.items()):
        row: dict[str, Any] = {"tau": tau, "loss": loss, "seeds": len(runs)}
        for key in SCALARS:
            vals = [float(r[key]) for r in runs if r.get(key) is not None]
            row[key] = statistics.fmean(vals) if vals else None  # None, not NaN: the JSON stays standard
        rewards = [float(r["heldout_reward"]) for r in runs]
        row["heldout_reward_std"] = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
        hist: Counter[int] = Counter()
        for r in runs:
            hist.update({int(k): int(v) for k, v in r.get("staleness_hist", {}).items()})
        row["staleness_hist"] = dict(sorted(hist.items()))
        table.append(row)
    return table


def plot(table: list[dict[str, Any]], path: Path) -> Path:
    """Held-out reward vs tau, one line per loss (error bars: std over seeds), the untrained policy dashed."""
    from . import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 4))
    losses = sorted({r["loss"] for r in table})
    for i, loss in enumerate(losses):
        rows = sorted((r for r in table if r["loss"] == loss), key=lambda r: r["tau"])
        dx = 0.08 * (i - (len(losses) - 1) / 2)  # a small shift so lines with equal rewards stay visible
        ax.errorbar(
            [r["tau"] + dx for r in rows],
            [r["heldout_reward"] for r in rows],
            yerr=[r["heldout_reward_std"] for r in rows],
            marker="o",
            capsize=3,
            label=loss,
        )
    before = [r["heldout_reward_before"] for r in table if r["heldout_reward_before"] is not None]
    if before:
        ax.axhline(statistics.fmean(before), color="grey", linestyle="--", label="before training")
    ax.set_xlabel("staleness tau (max policy versions behind)")
    ax.set_ylabel("held-out reward (greedy)")
    ax.set_xticks(sorted({r["tau"] for r in table}))
    ax.set_title("held-out reward vs staleness tau")
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path, dpi=120)


def run_cell(plan: Plan, tau: int, loss: str, seed: int, runs_dir: Path = RUNS_DIR) -> dict[str, Any]:
    from slime_rl.config import load_config
    from slime_rl.launcher import train

    run_dir = runs_dir / f"tau{tau}-{loss}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # metrics.jsonl appends: a previous run would mix in
    train(load_config(CONFIG, overrides=cell_overrides(plan, tau, loss, seed, run_dir)))
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return cell_metrics(summary, [r for r in records if r.get("kind") == "trainer"])


def _one_line(exc: Exception) -> str:
    """Ray wraps an actor's traceback into the message: keep its first line (what died) and last (the cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return f"{type(exc).__name__}: {text}"[:500]


@contextmanager
def _ray_session() -> Iterator[None]:
    """One Ray for every cell (RunContext reuses an initialised Ray), started as the launcher starts it."""
    import ray

    from slime_rl.run_context import start_ray

    started = not ray.is_initialized() and start_ray()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _attempt(plan: Plan, tau: int, loss: str, seed: int, runs_dir: Path) -> dict[str, Any]:
    """Run a cell, once more if it failed (on a shared machine an OOM kill or a stuck engine happens); a cell that
    fails every time has no "metrics", only its "errors", and the other cells go on."""
    cell: dict[str, Any] = {"tau": tau, "loss": loss, "seed": seed}
    for _ in range(1 + RETRIES):
        try:
            cell["metrics"] = run_cell(plan, tau, loss, seed, runs_dir)
            break
        except Exception as exc:
            cell.setdefault("errors", []).append(_one_line(exc))
    return cell


def run(quick: bool = False, seeds: int | None = None) -> dict[str, Any]:
    """`seeds`: run seeds 0..seeds-1 instead of the plan's (the full grid's cost grows with it)."""
    from slime_rl.config import load_config

    plan = QUICK if quick else FULL
    if seeds is not None:
        plan = replace(plan, seeds=tuple(range(seeds)))
    rollout = load_config(CONFIG).rollout  # the fixed budget: steps x groups_per_step x group_size trajectories
    runs_dir = RUNS_DIR / ("quick" if quick else "full")
    cells: list[dict[str, Any]] = []
    with _ray_session():
        for tau, loss, seed in plan.cells():
            cells.append(_attempt(plan, tau, loss, seed, runs_dir))
    table = aggregate(cells)
    budget = plan.steps * rollout.groups_per_step * rollout.group_size
    return {
        "plan": {
            "taus": plan.taus,
            "losses": plan.losses,
            "seeds": plan.seeds,
            "steps": plan.steps,
            "samples_per_cell": budget,
            "eval_samples": plan.eval_samples,
            "config": CONFIG,
            "runs_dir": str(runs_dir),
        },
        "cells": cells,
        "table": table,
        "failed_cells": sum("metrics" not in c for c in cells),
        "plot": str(plot(table, PLOT_PATH)) if table else None,
        "notes": NOTES,
    }
