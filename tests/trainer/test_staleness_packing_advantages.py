import pytest

from slime_rl.config import LossConfig
from slime_rl.trainer.advantages import compute_advantages, grpo, reinforce_pp
from slime_rl.trainer.packing import pack, padding_waste
from slime_rl.trainer.staleness import StalenessFilter
from slime_rl.trajectory import Status, Trajectory, TrajectoryGroup


def traj(gid, version, n=3, status=Status.COMPLETED, prompt=2, reward=0.0):
    return Trajectory(group_id=gid, prompt_ids=[1] * prompt, response_ids=[2] * n, loss_mask=[1] * n,
                      rollout_logprobs=[-1.0] * n, versions=[version] * n, status=status, reward=reward)


def group(gid, versions, **kw):
    return TrajectoryGroup(group_id=gid, trajectories=[traj(gid, v, **kw) for v in versions])


def test_staleness_keeps_pads_and_drops():
    f = StalenessFilter(tau=2)
    fresh = group("a", [5, 5, 4, 4])  # all within tau at version 6
    mostly = group("b", [5, 5, 5, 1])  # 3 of 4 valid: padded
    half = group("c", [5, 5, 1, 1])  # exactly half valid: dropped
    rep = f.apply([fresh, mostly, half], trainer_version=6)
    assert [g.group_id for g in rep.kept_groups] == ["a", "b"]
    assert [g.group_id for g in rep.dropped_groups] == ["c"]
    assert rep.kept == 7 and rep.padded == 1 and rep.dropped_stale == 3
    assert len(rep.kept_groups[1].trajectories) == 4
    assert rep.lag_hist == {1: 7, 2: 2, 5: 3}


def test_failed_samples_count_as_invalid():
    g = TrajectoryGroup(group_id="f", trajectories=[traj("f", 0), traj("f", 0, status=Status.FAILED),
                                                     traj("f", 0)])
    rep = StalenessFilter(tau=0).apply([g], trainer_version=0)
    assert rep.dropped_invalid == 1 and rep.kept == 2 and rep.padded == 1


def test_pack_respects_budget_and_keeps_every_token():
    trajs = [traj("p", 0, n=n) for n in (10, 3, 7, 5, 8, 1)]  # lengths n + 2
    batches = pack(trajs, budget=16)
    assert sorted(i for b in batches for i in b.items) == list(range(6))
    for b in batches:
        assert b.num_tokens <= 16
        assert b.cu_seqlens[-1] == b.num_tokens
        # positions restart at 0 for every sequence
        starts = b.cu_seqlens[:-1].tolist()
        assert all(b.position_ids[0, s] == 0 for s in starts)
    assert sum(b.num_tokens for b in batches) == sum(t.num_tokens for t in trajs)
    assert 0.0 <= padding_waste(batches, 16) < 0.25


def test_pack_rejects_a_sequence_over_budget():
    with pytest.raises(ValueError, match="micro_batch_tokens"):
        pack([traj("x", 0, n=40)], budget=16)


def test_grpo_and_reinforce_pp():
    assert grpo([1.0, 0.0, 1.0, 0.0], std_normalize=False) == [0.5, -0.5, 0.5, -0.5]
    assert grpo([1.0, 0.0, 1.0, 0.0]) == pytest.approx([1.0, -1.0, 1.0, -1.0], rel=1e-5)
    assert grpo([1.0, 1.0]) == [0.0, 0.0]
    out = reinforce_pp([[1.0, 0.0], [3.0, 1.0]])
    std = (0.625) ** 0.5  # of the centred values [0.5, -0.5, 1, -1]
    assert [x for g in out for x in g] == pytest.approx([0.5 / std, -0.5 / std, 1 / std, -1 / std], rel=1e-5)
    assert compute_advantages([[1.0, 0.0]], LossConfig(advantage="grpo", std_normalize=False)) == [[0.5, -0.5]]
