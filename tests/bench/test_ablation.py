"""The ablation bench's bookkeeping on synthetic cells: overrides, per-cell metrics, aggregation, plot, output
shape. No training here (the real runs are `slime-rl bench ablation [--quick]`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from slime_rl.bench import ablation
from slime_rl.bench.ablation import FULL, QUICK, Plan, aggregate, cell_metrics, cell_overrides, plot
from slime_rl.config import load_config


def _metrics(reward: float, masked: float = 0.1, hist: dict | None = None) -> dict:
    return {
        "heldout_reward": reward,
        "heldout_reward_before": 0.25,
        "masked_frac": masked,
        "logp_diff_mean": 0.2,
        "clip_frac": 0.0,
        "staleness_mean": 1.0,
        "staleness_max": 2,
        "staleness_hist": hist or {"0": 8},
        "dropped_stale": 0,
        "trained_samples": 48,
        "steps": 3,
        "train_reward_last_steps": 0.5,
        "wall_s": 100.0,
    }


def test_plans_cover_the_grid():
    assert len(FULL.cells()) == 4 * 4 * len(FULL.seeds) and len(FULL.seeds) >= 2
    assert {loss for _, loss, _ in FULL.cells()} == {"none", "tis", "icepop", "bilateral"}
    assert {tau for tau, _, _ in FULL.cells()} == {0, 2, 4, 8}
    assert QUICK.cells() == [(0, "none", 0), (0, "bilateral", 0), (4, "none", 0), (4, "bilateral", 0)]


@pytest.mark.parametrize("tau,loss", [(0, "none"), (8, "icepop"), (4, "tis"), (2, "bilateral")])
def test_overrides_make_a_valid_async_config(tmp_path, tau, loss):
    cfg = load_config(ablation.CONFIG, overrides=cell_overrides(FULL, tau, loss, 1, tmp_path / "cell"))
    assert (cfg.loss.kind, cfg.rollout.staleness_tau) == (loss, tau)
    assert cfg.mode == "async" and cfg.relay.push_every == 1  # every step pushed: the final eval sees final weights
    assert cfg.trainer.max_steps == FULL.steps and cfg.eval_samples == FULL.eval_samples
    assert cfg.rollout.seed == 1 and cfg.run_dir == tmp_path / "cell" and not cfg.dashboard.enabled
    # every cell of the grid trains on the same budget: only tau, the loss and the seeds differ
    other = load_config(ablation.CONFIG, overrides=cell_overrides(FULL, 0, "none", 1, tmp_path / "cell"))
    assert (cfg.rollout.groups_per_step, cfg.rollout.group_size) == (
        other.rollout.groups_per_step,
        other.rollout.group_size,
    )


def test_cell_metrics_weights_by_loss_tokens_and_skips_unstepped_steps():
    summary = {
        "heldout_reward_after": 0.75,
        "heldout_reward_before": 0.25,
        "staleness_mean": 1.5,
        "staleness_hist": {"0": 16, "1": 8, "3": 8},
        "dropped_stale": 4,
        "train_reward_last_steps": 0.6,
        "wall_s": 12.0,
    }
    steps = [
        {"stepped": True, "loss_tokens": 100, "masked_frac": 0.0, "logp_diff_mean": 0.1, "clip_frac": 0.0, "kept": 16},
        {"stepped": True, "loss_tokens": 300, "masked_frac": 0.4, "logp_diff_mean": 0.3, "clip_frac": 0.2, "kept": 12},
        # every group too stale: no optimizer step, its numbers must not count
        {"stepped": False, "kept": 0, "dropped_stale": 16},
    ]
    m = cell_metrics(summary, steps)
    assert m["heldout_reward"] == 0.75 and m["heldout_reward_before"] == 0.25
    assert m["masked_frac"] == pytest.approx((0.0 * 100 + 0.4 * 300) / 400)
    assert m["logp_diff_mean"] == pytest.approx((0.1 * 100 + 0.3 * 300) / 400)
    assert m["clip_frac"] == pytest.approx(0.15)
    assert m["steps"] == 2 and m["trained_samples"] == 28
    assert m["staleness_hist"] == {0: 16, 1: 8, 3: 8} and m["staleness_max"] == 3


def test_cell_metrics_with_no_step_has_no_fractions():
    m = cell_metrics({"heldout_reward_after": 0.2, "heldout_reward_before": 0.2}, [])
    assert m["masked_frac"] is None and m["steps"] == 0 and m["staleness_max"] == 0


def test_aggregate_means_over_seeds_and_leaves_failed_cells_out():
    cells = [
        {"tau": 4, "loss": "none", "seed": 0, "metrics": _metrics(0.5, masked=0.0, hist={"3": 8, "4": 8})},
        {"tau": 4, "loss": "none", "seed": 1, "metrics": _metrics(0.7, masked=0.0, hist={"4": 16})},
        {"tau": 4, "loss": "none", "seed": 2, "errors": ["RuntimeError: engine died"] * 2},
        {"tau": 0, "loss": "bilateral", "seed": 0, "metrics": _metrics(0.9, masked=0.3)},
        {"tau": 0, "loss": "bilateral", "seed": 1, "metrics": {**_metrics(0.8, masked=0.1), "masked_frac": None}},
    ]
    table = aggregate(cells)
    assert [(r["tau"], r["loss"]) for r in table] == [(0, "bilateral"), (4, "none")]  # sorted by tau, then loss
    bil, none = table
    assert none["seeds"] == 2 and none["heldout_reward"] == pytest.approx(0.6)
    assert none["heldout_reward_std"] == pytest.approx(0.1414, abs=1e-3)
    assert none["staleness_hist"] == {3: 8, 4: 24}
    assert bil["masked_frac"] == pytest.approx(0.3)  # a missing value is skipped, not counted as 0
    assert bil["heldout_reward"] == pytest.approx(0.85)


def test_single_seed_has_zero_spread():
    (row,) = aggregate([{"tau": 2, "loss": "tis", "seed": 0, "metrics": _metrics(0.4)}])
    assert row["heldout_reward_std"] == 0.0 and row["seeds"] == 1


def test_plot_writes_a_png(tmp_path):
    table = aggregate(
        [
            {"tau": tau, "loss": loss, "seed": s, "metrics": _metrics(0.8 - 0.05 * tau + 0.01 * s)}
            for tau in (0, 2, 4, 8)
            for loss in ("none", "bilateral")
            for s in (0, 1)
        ]
    )
    path = plot(table, tmp_path / "sub" / "ablation.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_run_assembles_cells_table_and_plot(tmp_path, monkeypatch):
    plan = Plan(taus=(0, 2), losses=("none", "bilateral"), seeds=(0, 1), steps=2, eval_samples=4)
    rewards = {("none", 0): 0.6, ("none", 2): 0.4, ("bilateral", 0): 0.6, ("bilateral", 2): 0.6}
    calls: list[tuple[int, str, int]] = []

    def fake_cell(p: Plan, tau: int, loss: str, seed: int, runs_dir: Path) -> dict:
        calls.append((tau, loss, seed))
        if (tau, loss, seed) == (2, "none", 1):
            raise RuntimeError("no trajectories reached the trainer")  # fails on every attempt
        if (tau, loss, seed) == (0, "bilateral", 0) and calls.count((tau, loss, seed)) == 1:
            raise RuntimeError("OOM")  # fails once, then works
        return _metrics(rewards[loss, tau] + 0.1 * seed)

    monkeypatch.setattr(ablation, "QUICK", plan)
    monkeypatch.setattr(ablation, "run_cell", fake_cell)
    monkeypatch.setattr(ablation, "_ray_session", contextlib.nullcontext)
    monkeypatch.setattr(ablation, "PLOT_PATH", tmp_path / "ablation.png")
    out = ablation.run(quick=True)
    assert len(out["cells"]) == 8 and out["failed_cells"] == 1 and len(calls) == 8 + 2
    assert out["cells"][5] == {
        "tau": 2,
        "loss": "none",
        "seed": 1,
        "errors": ["RuntimeError: no trajectories reached the trainer"] * 2,
    }
    assert out["cells"][2]["errors"] == ["RuntimeError: OOM"] and "metrics" in out["cells"][2]
    by = {(r["tau"], r["loss"]): r for r in out["table"]}
    assert by[2, "none"]["seeds"] == 1 and by[2, "none"]["heldout_reward"] == pytest.approx(0.4)
    assert by[0, "bilateral"]["seeds"] == 2 and by[0, "bilateral"]["heldout_reward"] == pytest.approx(0.65)
    assert out["plan"]["samples_per_cell"] == 2 * 16  # 2 steps x 2 groups x 8 samples of the math config
    assert Path(out["plot"]).read_bytes()[:4] == b"\x89PNG"


def test_a_wrapped_actor_error_is_reported_by_its_cause():
    exc = RuntimeError(
        'The actor died because of an error raised in its creation task\n  File "w.py", line 50\n'
        "    ^^^^\nAttributeError: 'RolloutConfig' object has no attribute 'x'\n"
    )
    assert ablation._one_line(exc) == (
        "RuntimeError: The actor died because of an error raised in its creation task"
        " ... AttributeError: 'RolloutConfig' object has no attribute 'x'"
    )
    assert ablation._one_line(ValueError("plain")) == "ValueError: plain"
