import msgpack
import pytest

from slime_rl.trajectory import Status, Trajectory, TrajectoryError, TrajectoryGroup


def make_traj(group_id="g", n=5, **kw):
    return Trajectory(
        group_id=group_id,
        prompt_ids=[1, 2, 3],
        response_ids=list(range(10, 10 + n)),
        loss_mask=[1] * n,
        rollout_logprobs=[-0.25] * n,
        versions=[3] * n,
        reward=1.0,
        **kw,
    )


def test_round_trip_is_exact_and_compact():
    n = 2000
    traj = make_traj(n=n, metadata={"checks": [{"name": "a", "passed": True}]})
    group = TrajectoryGroup(group_id="g", trajectories=[traj])
    raw = group.to_bytes()
    assert TrajectoryGroup.from_bytes(raw) == group
    # packed arrays: ~13 bytes per token (ids 4 + mask 1 + logprob 4 + version 4), far below JSON floats
    assert len(raw) < 14 * n + 1000


def test_first_version_skips_observation_tokens():
    traj = Trajectory(
        group_id="g",
        prompt_ids=[1],
        response_ids=[5, 6, 7],
        loss_mask=[0, 1, 1],
        rollout_logprobs=[0.0, -1.0, -1.0],
        versions=[-1, 4, 5],
    )
    assert traj.first_version == 4
    assert traj.trainable


def test_misaligned_arrays_name_the_field():
    with pytest.raises(ValueError, match="rollout_logprobs has 1 entries"):
        Trajectory(
            group_id="g", prompt_ids=[1], response_ids=[2, 3], loss_mask=[1, 1], rollout_logprobs=[0.0], versions=[0, 0]
        )


def test_group_id_mismatch_rejected():
    with pytest.raises(ValueError, match="group_id"):
        TrajectoryGroup(group_id="other", trajectories=[make_traj()])


def test_truncated_bytes_rejected():
    raw = TrajectoryGroup(group_id="g", trajectories=[make_traj()]).to_bytes()
    with pytest.raises(TrajectoryError, match="undecodable"):
        TrajectoryGroup.from_bytes(raw[: len(raw) // 2])


def test_wrong_types_name_the_field():
    wire = make_traj().to_wire()
    wire["reward"] = "high"
    raw = msgpack.packb({"v": 1, "group_id": "g", "trajectories": [wire]}, use_bin_type=True)
    with pytest.raises(TrajectoryError, match=r"trajectories\[0\]\.reward"):
        TrajectoryGroup.from_bytes(raw)


def test_missing_field_named():
    wire = make_traj().to_wire()
    del wire["versions"]
    raw = msgpack.packb({"v": 1, "group_id": "g", "trajectories": [wire]}, use_bin_type=True)
    with pytest.raises(TrajectoryError, match=r"versions: missing"):
        TrajectoryGroup.from_bytes(raw)


def test_oversized_rejected():
    raw = TrajectoryGroup(group_id="g", trajectories=[make_traj(n=100)]).to_bytes()
    with pytest.raises(TrajectoryError, match="exceeds the limit"):
        TrajectoryGroup.from_bytes(raw, max_bytes=100)


def test_status_values():
    assert make_traj(status=Status.ABORTED).trainable is False
