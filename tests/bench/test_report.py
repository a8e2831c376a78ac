"""BENCHMARKS.md is generated from the result files alone: targets judged, missing benchmarks named."""

import json

from slime_rl.bench.report import TARGETS, load_results, plot_targets, render, scalars, write_report


def _write(d, name, **fields):
    (d / f"{name}.json").write_text(
        json.dumps(
            {
                "benchmark": name,
                "quick": False,
                "started_at": 0.0,
                "wall_s": 1.5,
                "machine": {"cpus": 2, "python": "3.11"},
                **fields,
            }
        )
    )


def test_targets_are_judged_in_both_directions(tmp_path):
    _write(tmp_path, "engine", speedup_vs_hf_generate=3.65)
    _write(tmp_path, "relay", blocked_ratio_k4_k1=1.5, propagation_vs_bound=1.7)
    md = render(load_results(tmp_path))
    assert "| engine | `speedup_vs_hf_generate` | >= 3 | 3.65 | yes |" in md
    assert "| relay | `blocked_ratio_k4_k1` | <= 1.2 | 1.5 | **no** |" in md
    assert "| relay | `propagation_vs_bound` | <= 2 | 1.7 | yes |" in md
    assert "| trainer | `ratio_vs_hf_training` | >= 1 | not run |  |" in md
    assert "Not run yet:" in md and "`trainer`" in md


def test_nested_results_are_flattened_and_lists_left_out():
    flat = scalars({"benchmark": "x", "a": 1, "sync": {"wall_s": 2.0, "x": [1, 2]}, "cells": [{"a": 1}]})
    assert flat == {"a": 1, "sync.wall_s": 2.0}


def test_report_and_chart_are_written(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _write(results, "trainer", ratio_vs_hf_training=1.38, padding_waste=0.017)
    out = write_report(results, tmp_path / "BENCHMARKS.md")
    text = out.read_text()
    assert "## trainer" in text and "| `ratio_vs_hf_training` | 1.38 |" in text
    assert (results / "targets.png").read_bytes()[:4] == b"\x89PNG"


def test_no_chart_without_measurements(tmp_path):
    assert plot_targets({}, tmp_path / "t.png") is False
    assert not (tmp_path / "t.png").exists()
    assert len({(t.benchmark, t.key) for t in TARGETS}) == len(TARGETS)


def test_quick_results_are_marked_and_row_tables_rendered(tmp_path):
    _write(tmp_path, "relay", quick=True, propagation_vs_bound=1.7)
    _write(
        tmp_path,
        "ablation",
        table=[
            {"tau": 0, "loss": "none", "heldout_reward": 0.8125, "hist": {"0": 1}},
            {"tau": 4, "loss": "bilateral", "heldout_reward": 0.75, "hist": {}},
        ],
    )
    md = render(load_results(tmp_path))
    assert "| relay | `propagation_vs_bound` | <= 2 | 1.7 (quick) | yes |" in md
    assert "| tau | loss | heldout_reward |" in md and "| 4 | bilateral | 0.75 |" in md
