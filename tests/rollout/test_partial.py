"""The partial-rollout state machine, without engines or Redis."""

import pytest

from slime_rl.rollout.partial import Partial, PartialStore, PendingGroup
from slime_rl.staleness import StalenessRule
from slime_rl.trajectory import Trajectory


def partial(key: str, index: int, versions: list[int]) -> Partial:
    n = len(versions)
    return Partial(key, {"id": key}, "g", index, [1, 2], list(range(10, 10 + n)), [-0.5] * n, versions)


def done(index: int, version: int) -> Trajectory:
    return Trajectory(
        group_id="g",
        prompt_ids=[1],
        response_ids=[5],
        loss_mask=[1],
        rollout_logprobs=[-0.1],
        versions=[version],
        sample_index=index,
    )


def test_partial_keeps_tokens_and_reduces_the_budget():
    p = partial("a", 0, [3, 3, 4])
    assert p.remaining(10) == 7 and p.remaining(2) == 0 and p.first_version() == 3
    with pytest.raises(ValueError, match="2 tokens, 1 logprobs"):
        Partial("b", {}, "g", 0, [1], [1, 2], [-0.1], [0, 0])


def test_group_todo_resumes_partials_or_fills_missing_samples():
    g = PendingGroup({}, "g", 0)
    assert g.todo(3) == [(0, None), (1, None), (2, None)] and g.first_version() is None
    g.done = [done(1, 4)]
    assert g.todo(3) == [(0, None), (2, None)] and not g.is_complete(3)
    g.partials = [partial("g-0", 0, [2])]
    assert g.todo(3) == [(0, g.partials[0])] and g.first_version() == 2
    g.partials, g.done = [], [done(0, 1), done(1, 1), done(2, 1)]
    assert g.is_complete(3)


def test_store_drops_stale_groups_and_keeps_fresh_ones_in_order():
    store = PartialStore(StalenessRule(tau=2, groups_per_step=1))
    old, fresh, empty = PendingGroup({}, "old", 0), PendingGroup({}, "fresh", 1), PendingGroup({}, "empty", 2)
    old.partials, old.done = [partial("old-1", 1, [0, 1])], [done(0, 1)]
    fresh.partials = [partial("fresh-0", 0, [3]), partial("fresh-1", 1, [4])]
    empty.partials = [Partial("empty-0", {}, "empty", 0, [1])]  # nothing generated yet: never stale
    for g in (old, fresh, empty):
        store.put(g)
    got = store.take(trainer_version=4, limit=1)
    assert [g.group_id for g in got] == ["fresh"] and store.dropped_groups == 1 and store.dropped_samples == 2
    assert store.resumed == 2 and len(store) == 1 and store.num_partials() == 1
    assert [g.group_id for g in store.take(trainer_version=100)] == ["empty"] and len(store) == 0
