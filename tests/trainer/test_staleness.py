import pytest
from trainer_helpers import group, traj

from slime_rl.staleness import StalenessRule
from slime_rl.trainer.staleness import StalenessFilter
from slime_rl.trajectory import Status, TrajectoryGroup


def rule(tau: int) -> StalenessRule:
    return StalenessRule(tau=tau, groups_per_step=1)


def test_keeps_pads_and_drops_with_counts():
    f = StalenessFilter(rule(2))
    fresh = group("a", [5, 5, 4, 4])  # lags 1, 1, 2, 2: all within tau at version 6 (lag == tau is kept)
    mostly = group("b", [5, 5, 5, 1])  # 3 of 4 valid: the stale slot is padded
    half = group("c", [5, 5, 1, 1])  # exactly half valid: not more than half, dropped
    rep = f.apply([fresh, mostly, half], trainer_version=6)
    assert [g.group_id for g in rep.kept_groups] == ["a", "b"]
    assert [g.group_id for g in rep.dropped_groups] == ["c"]
    assert rep.kept == 7 and rep.padded == 1 and rep.dropped_stale == 3 and rep.dropped_with_group == 2
    assert rep.lag_hist == {1: 7, 2: 2, 5: 3}
    padded = rep.kept_groups[1].trajectories
    assert len(padded) == 4 and padded[3].id == padded[0].id  # repeats a valid one
    assert all(t.first_version == 5 for t in padded)
    every = [t.id for g in (fresh, mostly, half) for t in g.trajectories]
    assert sorted(rep.kept_ids + rep.dropped_ids) == sorted(every)  # each trajectory accounted for once
    m = rep.metrics()
    assert m["staleness_hist"] == {"1": 7, "2": 2, "5": 3} and m["dropped_groups"] == 1 and m["kept"] == 7


def test_failed_samples_are_invalid_and_padded_over():
    g = TrajectoryGroup(group_id="f", trajectories=[traj("f"), traj("f", status=Status.FAILED), traj("f")])
    rep = StalenessFilter(rule(0)).apply([g], trainer_version=0)
    assert rep.dropped_invalid == 1 and rep.kept == 2 and rep.padded == 1
    assert 0 not in rep.lag_hist or rep.lag_hist[0] == 2  # invalid ones are not in the histogram


def test_tau_zero_keeps_only_the_current_version_and_future_is_not_stale():
    rep = StalenessFilter(rule(0)).apply([group("a", [3, 3, 4]), group("b", [2, 2, 3])], trainer_version=3)
    assert [g.group_id for g in rep.kept_groups] == ["a"] and rep.dropped_stale == 2
    assert rep.lag_hist == {0: 4, 1: 2}


def test_negative_tau_is_rejected():
    with pytest.raises(ValueError, match="tau"):
        rule(-1)
