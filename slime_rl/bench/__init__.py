"""Benchmarks: each is a function returning a dict of measurements, ratios taken against a baseline measured
in the same run. `run_benchmark` adds machine and version info and writes bench/results/NAME.json."""

from __future__ import annotations

import importlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCHMARKS: dict[str, str] = {
    "buffer": "slime_rl.bench.buffer:run",
    "engine": "slime_rl.bench.engine:run",
    "rollout": "slime_rl.bench.rollout:run",
    "repack": "slime_rl.bench.repack:run",
    "trainer": "slime_rl.bench.trainer:run",
    "relay": "slime_rl.bench.relay:run",
    "sandbox": "slime_rl.bench.sandbox:run",
    "async": "slime_rl.bench.async_vs_sync:run",
    "ablation": "slime_rl.bench.ablation:run",
    "trl": "slime_rl.bench.trl_compare:run",
}

RESULTS_DIR = Path("bench/results")


def resolve(dotted: str) -> Callable[..., dict[str, Any]]:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
    }


def run_benchmark(name: str, quick: bool = False, results_dir: Path = RESULTS_DIR, **options: Any) -> Path:
    started = time.time()
    result = resolve(BENCHMARKS[name])(quick=quick, **options)
    result = {
        "benchmark": name,
        "quick": quick,
        "started_at": started,
        "wall_s": round(time.time() - started, 3),
        "machine": machine_info(),
        **result,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.rename(path)
    return path


def pyplot():
    """matplotlib's pyplot on the headless Agg backend (benchmark machines have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
