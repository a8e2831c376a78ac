"""`slime-rl train` without RAY_ADDRESS on a machine where a Ray head is running (a user's `ray start --head`, which
Ray records as the machine's current cluster): the run starts its own private Ray and succeeds, and the head is left
as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2e_helpers import read_summary, run_train, tiny_overrides

from slime_rl.net import wait_for_port


@pytest.mark.slow
def test_run_beside_a_running_head_starts_its_own_ray(ray_head, math_config, tiny_model_path, tmp_path):
    ray_dir = ray_head["tmpdir"] / "ray"
    assert (ray_dir / "ray_current_cluster").read_text().strip().endswith(f":{ray_head['gcs_port']}")
    head_session = (ray_dir / "session_latest").resolve()
    run_dir = tmp_path / "run"
    # RAY_TMPDIR: where this run's Ray looks for the machine's current cluster, the head's temp dir here
    proc = run_train(
        [math_config, *tiny_overrides(tiny_model_path, run_dir, **{"trainer.max_steps": 2})],
        env={"RAY_TMPDIR": str(ray_head["tmpdir"])},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert read_summary(run_dir)["final_version"] == 2
    run_session = Path(os.readlink(run_dir / "logs" / "actors")).parent
    assert run_session.parent == ray_dir and run_session != head_session, "the run joined the head's Ray"
    assert ray_head["proc"].poll() is None, "the head stopped"
    wait_for_port("127.0.0.1", ray_head["gcs_port"], timeout=5)
    assert (ray_dir / "ray_current_cluster").read_text().strip().endswith(f":{ray_head['gcs_port']}")
