"""`slime-rl bench engine --quick` end to end: every contender runs and the result has the documented keys
(no speed assertions: the machine is shared; numbers go to bench/results)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slime_rl.bench import run_benchmark
from slime_rl.bench.engine import workload


def test_workload_is_long_tailed():
    lengths = workload(32, 12)
    assert np.median(lengths) == 12 and 9 <= np.percentile(lengths, 99) / np.median(lengths) <= 11


@pytest.mark.slow
def test_quick_engine_benchmark(real_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(real_model_path.parents[2])  # the benchmark finds the model under .cache/ of the checkout
    data = json.loads(run_benchmark("engine", quick=True, results_dir=tmp_path).read_text())
    for key in ("tokens_per_s", "hf_generate_tokens_per_s", "speedup_vs_hf_generate"):
        assert isinstance(data[key], float) and data[key] > 0, key
    assert isinstance(data["transformers_cb_tokens_per_s"], (float, str))
    assert data["workload"]["requests"] == 8 and data["workload"]["useful_tokens"] == sum(workload(8, 4))
