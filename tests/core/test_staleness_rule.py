"""The staleness rule and the published policy version: one owner, asked by the workers, partials and trainer."""

from __future__ import annotations

import pytest

from slime_rl.run_keys import RunKeys
from slime_rl.staleness import PolicyVersion, StalenessRule


def test_capacity_is_the_areal_formula_split_over_workers():
    rule = StalenessRule(tau=2, groups_per_step=4, num_workers=3)
    # (v + tau + 1) * groups_per_step groups in all: 12 at v = 0, shared 4/4/4; 16 at v = 1, shared 6/5/5
    assert [rule.capacity(0, i) for i in range(3)] == [4, 4, 4]
    assert [rule.capacity(1, i) for i in range(3)] == [6, 5, 5]
    assert StalenessRule(tau=0, groups_per_step=2).capacity(3) == 8


def test_lag_counts_from_the_oldest_token_and_never_goes_negative():
    rule = StalenessRule(tau=1, groups_per_step=1)
    assert rule.lag(3, trainer_version=5) == 2 and rule.lag(7, trainer_version=5) == 0
    assert rule.is_stale(3, 5) and not rule.is_stale(4, 5) and not rule.is_stale(None, 99)
    with pytest.raises(ValueError, match="tau"):
        StalenessRule(tau=-1, groups_per_step=1)


def test_policy_version_is_per_run(redis_server):
    import redis

    r = redis.Redis.from_url(redis_server.url)
    a, b = PolicyVersion(r, RunKeys(run_id="a")), PolicyVersion(r, RunKeys(run_id="b"))
    assert a.get() == 0
    a.set(3)
    assert a.get() == 3 and b.get() == 0
