"""The whole pipeline (Redis, Ray, engine, rollout worker, trainer, relay) on a tiny model, async and sync."""

from __future__ import annotations

import json

import pytest
from e2e_helpers import read_summary, run_train, tiny_overrides


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["async", "sync"])
def test_pipeline_runs_and_accounts_for_every_trajectory(mode, math_config, tiny_model_path, tmp_path):
    run_dir = tmp_path / mode
    proc = run_train([math_config, *tiny_overrides(tiny_model_path, run_dir, mode=mode)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = read_summary(run_dir)
    assert s["mode"] == mode and s["steps"] == 3
    assert s["final_version"] == 3  # one policy version per optimizer step, only forward
    buf = s["buffer"]
    # every group produced is accounted for: trained or dropped as stale (both acknowledged), dead-lettered,
    # a duplicate, or still waiting in the stream when the run stopped
    assert buf["produced"] == buf["consumed"] + buf["dead_lettered"] + buf["duplicates"] + buf["depth"]
    assert s["trained_groups"] + s["dropped_stale_groups"] == buf["consumed"]
    # versions only move forward, and the engines ended up holding the trainer's last pushed version
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    versions = [r["version"] for r in records if r["kind"] == "trainer"]
    assert versions == sorted(versions) and versions[-1] == 3
    assert set(s["engine_versions"].values()) == {s["last_pushed_version"]}
    assert s["weight_pushes"] == 3
