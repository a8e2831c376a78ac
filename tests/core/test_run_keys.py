"""Run isolation: each run's Redis names come from its id, two ids never share a key, the id survives a resume,
and two buffers with different ids on one Redis see nothing of each other."""

from __future__ import annotations

import itertools

import pytest
from test_buffer import make_group
from typer.testing import CliRunner

from slime_rl.buffer import TrajectoryBuffer
from slime_rl.cli import app
from slime_rl.config import BufferConfig, ConfigError, dump_config, load_config
from slime_rl.metrics import MetricsSink, read_metrics
from slime_rl.run_keys import RunKeys, new_run_id
from slime_rl.staleness import PolicyVersion

# ids that are prefixes, near-copies or suffix-extensions of each other
IDS = ["a", "ab", "a-b", "a.b", "a_b", "a-traj", "run-1", "run-10", "run-1-traj", "A"]


def test_two_run_ids_never_share_a_key_or_a_prefix():
    keys = [RunKeys(i) for i in IDS]
    for k in keys:
        names = list(k.all().values())
        assert len(set(names)) == len(names)  # one name per role
        assert all(name.startswith(k.prefix) and k.run_id in name for name in names)
    for a, b in itertools.combinations(keys, 2):
        assert not set(a.all().values()) & set(b.all().values()), (a.run_id, b.run_id)
        # a SCAN of one run's prefix never matches another run's keys
        assert not any(name.startswith(a.prefix) for name in b.all().values())
        assert not any(name.startswith(b.prefix) for name in a.all().values())


@pytest.mark.parametrize("bad", ["", "a:b", "a}b", "{a}", "a b", "-a", "x" * 101])
def test_ids_that_could_reach_into_another_runs_names_are_refused(bad):
    with pytest.raises(ValueError, match="run id"):
        RunKeys(bad)
    with pytest.raises(ConfigError, match="run_id"):
        load_config(None, [f"run_id={bad!r}"] if bad else ["run_id=' '"])


def test_new_run_ids_are_readable_valid_and_distinct():
    ids = {new_run_id("math demo/v2!") for _ in range(50)}
    assert len(ids) == 50
    for i in ids:
        assert i.startswith("math-demo-v2-") and RunKeys(i).run_id == i
    assert new_run_id("::").startswith("run-")


def test_a_fresh_config_gets_an_id_that_a_resume_keeps(tmp_path):
    first, second = load_config(None, ["name=demo"]), load_config(None, ["name=demo"])
    assert first.run_id.startswith("demo-") and first.run_id != second.run_id  # two fresh runs: two namespaces
    assert load_config(None, ["run_id=mine"]).run_id == "mine"  # a user-chosen id is kept as it is
    dump_config(first, tmp_path / "config.yaml")  # what the launcher writes into RUN_DIR
    assert load_config(tmp_path / "config.yaml").run_id == first.run_id  # what --resume reads back


def test_config_show_prints_the_run_id(tmp_path):
    (tmp_path / "c.yaml").write_text("name: demo\n")
    out = CliRunner().invoke(app, ["config", "show", str(tmp_path / "c.yaml"), "run_id=shown-id"])
    assert out.exit_code == 0 and "run_id: shown-id" in out.output
    assert "stream:" not in out.output  # the buffer has no key names of its own any more


def test_two_runs_on_one_redis_see_nothing_of_each_other(redis_url, tmp_path):
    a, b = RunKeys("run-a"), RunKeys("run-b")
    cfg = BufferConfig()
    buf_a = TrajectoryBuffer(cfg, redis_url, consumer="trainer-0", keys=a)
    buf_b = TrajectoryBuffer(cfg, redis_url, consumer="trainer-0", keys=b)  # same consumer and group names
    buf_a.put_many([make_group("a0"), make_group("a1")])
    buf_b.put(make_group("b0"))
    PolicyVersion(buf_a.r, a).set(5)
    got_a, got_b = buf_a.read(10, block_ms=100), buf_b.read(10, block_ms=100)
    assert sorted(e.group.group_id for e in got_a) == ["g-a0", "g-a1"]
    assert [e.group.group_id for e in got_b] == ["g-b0"]
    buf_a.ack(got_a)
    assert not buf_b.is_trained("t-a0-0") and buf_a.is_trained("t-a0-0")
    assert PolicyVersion(buf_b.r, b).get() == 0
    assert (buf_a.stats().produced, buf_a.stats().consumed) == (2, 2)
    assert (buf_b.stats().produced, buf_b.stats().consumed, buf_b.stats().pending) == (1, 0, 1)

    MetricsSink("trainer-0", redis_url, tmp_path / "a", keys=a).log("trainer", {"loss": 1.0}, step=1)
    MetricsSink("trainer-0", redis_url, tmp_path / "b", keys=b).log("trainer", {"loss": 2.0}, step=1)
    assert [r["loss"] for r in read_metrics(buf_a.r, a)[1]] == [1.0]
    assert [r["loss"] for r in read_metrics(buf_b.r, b)[1]] == [2.0]


def test_a_redis_metrics_sink_needs_the_runs_keys(redis_url, tmp_path):
    with pytest.raises(ValueError, match="keys"):
        MetricsSink("x", redis_url)
    MetricsSink("x", run_dir=tmp_path).log("eval", {"reward_mean": 0.0})  # file only: no keys needed


def test_dashboard_command_needs_to_know_which_run(tmp_path):
    out = CliRunner().invoke(app, ["dashboard", "--redis", "redis://127.0.0.1:1/0"])
    assert out.exit_code == 2 and "--run-id" in out.output
