"""Benchmarks run and write the keys their issues ask for (quick workloads; the numbers are not asserted)."""

import json

from slime_rl.bench import BENCHMARKS, run_benchmark


def test_registry_points_at_importable_functions():
    from slime_rl.bench import resolve

    for name, dotted in BENCHMARKS.items():
        assert callable(resolve(dotted)), name


def test_buffer_bench_writes_its_json(tmp_path):
    path = run_benchmark("buffer", quick=True, results_dir=tmp_path)
    data = json.loads(path.read_text())
    assert {"traj_per_s", "mb_per_s", "raw_per_s", "ratio", "lost"} <= set(data)
    assert data["lost"] == 0 and data["traj_per_s"] > 0 and data["machine"]["cpus"] >= 1


def test_rollout_bench_writes_its_json(tmp_path, real_model_path):
    data = json.loads(run_benchmark("rollout", quick=True, results_dir=tmp_path).read_text())
    assert {"tokens_per_s", "raw_engine_tokens_per_s", "ratio_vs_raw_engine"} <= set(data)
    assert data["tokens_per_s"] > 0
