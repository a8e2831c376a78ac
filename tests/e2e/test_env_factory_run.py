"""A real run with an environment factory: each rollout worker (and the evaluation worker) builds its factory once
and the run closes it before stopping the worker; a typo in env.kwargs stops the run at start-up, naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_helpers import run_train, tiny_overrides

ENVS = str(Path(__file__).parent)  # factory_envs.py, importable by the run's Ray actors through PYTHONPATH
FACTORY = "factory_envs:MarkedArithmeticFactory"


@pytest.mark.slow
def test_run_builds_each_workers_factory_once_and_closes_it(math_config, tiny_model_path, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    args = tiny_overrides(
        tiny_model_path,
        tmp_path / "run",
        **{"trainer.max_steps": 2, "env.name": FACTORY, "env.kwargs": json.dumps({"marker_dir": str(marks)})},
    )
    proc = run_train([math_config, *args], timeout=420, env={"PYTHONPATH": ENVS})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = sorted(p.name.removeprefix("built-") for p in marks.glob("built-*"))
    closed = sorted(p.name.removeprefix("closed-") for p in marks.glob("closed-*"))
    assert len(built) == 2  # one rollout worker and the evaluation worker: one factory each, for all episodes
    assert closed == built


@pytest.mark.slow
def test_a_typo_in_env_kwargs_stops_the_run_at_start_up(math_config, tiny_model_path, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    args = tiny_overrides(
        tiny_model_path, tmp_path / "run", **{"env.name": FACTORY, "env.kwargs": json.dumps({"marker_dri": str(marks)})}
    )
    proc = run_train([math_config, *args], timeout=300, env={"PYTHONPATH": ENVS})
    out = " ".join((proc.stdout + proc.stderr).split())  # rich wraps long lines
    assert proc.returncode != 0
    assert "env.kwargs: unknown key 'marker_dri' for MarkedArithmeticFactory" in out, out[-4000:]
    assert not list(marks.iterdir())  # no factory was built
    assert (
        not (tmp_path / "run" / "metrics.jsonl").exists()
        or '"kind": "trainer"' not in (tmp_path / "run" / "metrics.jsonl").read_text()
    )
