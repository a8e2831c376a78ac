"""Two runs at the same time on one external Redis: neither sees the other's trajectories, weights, metrics or
control actions (each run's keys carry its id)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from e2e_helpers import dashboard_url, metrics_records, read_summary, start_train, tiny_overrides, trainer_steps

from slime_rl.run_keys import RunKeys

# different lengths: the last weight version a run announces tells the two apart; both are long enough that a
# paused run cannot finish on what its buffer already holds (at most rollout.staleness_tau + 1 steps)
STEPS = {"a": 12, "b": 10}
AUTH = {"Authorization": "Bearer tok"}


def trained_ids(run_dir: Path) -> set[str]:
    lines = (run_dir / "trained_ids.jsonl").read_text().splitlines()
    return {i for line in lines for i in json.loads(line)["ids"]}


def actions(run_dir: Path) -> list[str]:
    return [c["action"] for c in metrics_records(run_dir, "control")] if (run_dir / "metrics.jsonl").exists() else []


def wait_until(done, procs: dict, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert all(p.poll() is None for p in procs.values()), f"a run exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_runs_on_one_redis_see_nothing_of_each_other(math_config, tiny_model_path, tmp_path, redis_url):
    dirs = {n: tmp_path / n for n in STEPS}
    procs = {
        n: start_train(
            [
                math_config,
                *tiny_overrides(
                    tiny_model_path,
                    dirs[n],
                    **{
                        "name": f"run-{n}",
                        "buffer.redis_url": redis_url,
                        "trainer.max_steps": STEPS[n],
                        "dashboard.enabled": "true",
                        "dashboard.token": "tok",
                    },
                ),
            ],
            tmp_path / f"{n}.log",
        )
        for n in STEPS
    }
    url = {}

    def control(n: str, action: str) -> None:
        url.setdefault(n, dashboard_url(tmp_path / f"{n}.log"))
        assert httpx.post(f"{url[n]}api/control/{action}", headers=AUTH).status_code == 200

    try:
        # pause each run through its own dashboard as soon as it trains: a paused run keeps reading its control
        # stream and cannot finish, so both are listening when run a alone is sent a checkpoint
        paused: set[str] = set()

        def pause_each_once_training() -> bool:
            for n in set(STEPS) - paused:
                if trainer_steps(dirs[n]) >= 1:
                    control(n, "pause_rollout")
                    paused.add(n)
            return len(paused) == len(STEPS)

        wait_until(pause_each_once_training, procs, "both runs to train a step")
        wait_until(lambda: all(actions(dirs[n]) == ["pause_rollout"] for n in STEPS), procs, "both to pause")
        control("a", "checkpoint")
        wait_until(lambda: actions(dirs["a"])[-1:] == ["checkpoint"], procs, "run a's checkpoint")
        for n in STEPS:
            control(n, "resume_rollout")
        for n in STEPS:
            assert procs[n].wait(300) == 0, (tmp_path / f"{n}.log").read_text()[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()

    r = redis.Redis.from_url(redis_url)
    ids = {n: yaml.safe_load((dirs[n] / "config.yaml").read_text())["run_id"] for n in STEPS}
    assert ids["a"].startswith("run-a-") and ids["b"].startswith("run-b-")  # assigned at start, one per run
    keys = {n: RunKeys(ids[n]) for n in STEPS}
    summary = {n: read_summary(dirs[n]) for n in STEPS}
    logged = {n: {t["id"] for t in metrics_records(dirs[n], "trajectory")} for n in STEPS}  # one per pushed group
    for n, other in (("a", "b"), ("b", "a")):
        assert summary[n]["final_version"] == STEPS[n]
        # trajectories: a run trains only what its own workers produced; its Redis set of trained ids is its own
        trained = trained_ids(dirs[n])
        assert trained & logged[n] and not trained & logged[other]
        assert {m.decode() for m in r.smembers(keys[n].trained)} == trained
        # weights: the run's stream holds only its own relay's announcements, and its engines its own last version
        announced = [int(f[b"version"]) for _, f in r.xrange(keys[n].weights)]
        assert max(announced) == summary[n]["last_pushed_version"] == STEPS[n]
        assert len(announced) <= summary[n]["weight_pushes"] and announced == sorted(announced)
        assert set(summary[n]["engine_versions"].values()) == {STEPS[n]}
        # metrics: the run's stream holds exactly the records its own components wrote into its metrics.jsonl
        streamed = Counter(f[b"json"].decode() for _, f in r.xrange(keys[n].metrics))
        assert streamed == Counter((dirs[n] / "metrics.jsonl").read_text().splitlines())
    # control: each run acted on its own actions only (with one stream, paused run b would have checkpointed too)
    assert actions(dirs["a"]) == ["pause_rollout", "checkpoint", "resume_rollout"]
    assert actions(dirs["b"]) == ["pause_rollout", "resume_rollout"]
    assert r.xlen(keys["a"].control) == 3 and r.xlen(keys["b"].control) == 2
