"""The progress watchdog: consecutive batches without a trainable group, silence, the cause in the message."""

from __future__ import annotations

import pytest

from slime_rl.config import WatchdogConfig
from slime_rl.results import BatchStats
from slime_rl.trajectory import Status, Trajectory, TrajectoryGroup
from slime_rl.watchdog import ProgressWatchdog, RunStalled, describe_failures

NO_REWARD = "EnvError: the episode was cut at env.max_turns=1 and the environment's last step gave no reward"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def batch(groups: int, size: int, trainable: int, failures: dict[str, int] | None = None) -> BatchStats:
    failed = sum((failures or {}).values())
    return BatchStats(
        groups=groups,
        samples=groups * size,
        trainable_groups=trainable,
        kept=groups * size - failed,
        kept_groups=trainable,
        padded=0,
        dropped_stale=0,
        dropped_invalid=failed,
        dropped_with_group=0,
        dropped_groups=groups - trainable,
        failure_reasons=failures or {},
        reward_mean=0.0,
        response_len_mean=4.0,
    )


def failed_batch(groups: int = 2, size: int = 4, reason: str = NO_REWARD) -> BatchStats:
    return batch(groups, size, trainable=0, failures={reason: groups * size})


def test_consecutive_untrainable_batches_stop_the_run_naming_the_failures():
    dog = ProgressWatchdog(WatchdogConfig(max_untrainable_batches=3))
    assert "1/3" in dog.on_batch(failed_batch()) and "8/8 samples failed" in dog.on_batch(failed_batch())
    with pytest.raises(RunStalled) as err:
        dog.on_batch(failed_batch())
    msg = str(err.value)
    assert "3 batches in a row held no trainable group" in msg and "max_untrainable_batches=3" in msg
    assert f"24/24 samples failed: {NO_REWARD} (24x)" in msg


def test_a_trainable_batch_resets_the_streak():
    dog = ProgressWatchdog(WatchdogConfig(max_untrainable_batches=2))
    dog.on_batch(failed_batch())
    # a batch whose groups a filter drops on purpose (stale, zero variance) still holds trainable groups
    assert dog.on_batch(batch(2, 4, trainable=2)) is None
    dog.on_batch(failed_batch())  # one in a row again: no stop
    assert dog.untrainable_streak == 1


def test_silence_stops_the_run_after_max_silence_s_unless_paused():
    clock = Clock()
    dog = ProgressWatchdog(WatchdogConfig(max_silence_s=60), clock=clock)
    clock.now = 59
    dog.on_wait(False, lambda: "never asked")
    clock.now = 200
    dog.on_wait(True, lambda: "never asked")  # paused from the dashboard: the clock starts again
    clock.now = 259
    dog.on_wait(False, lambda: "never asked")
    dog.on_batch(failed_batch(groups=1, size=2, reason="TimeoutError: the environment did not answer"))
    clock.now = 400
    with pytest.raises(RunStalled) as err:
        dog.on_wait(False, lambda: "Rollout workers: 3 groups started, 1 pushed.")
    msg = str(err.value)
    assert "no trajectory reached the trainer for 141 s" in msg and "max_silence_s=60" in msg
    assert "Rollout workers: 3 groups started, 1 pushed." in msg
    assert "2/2 samples failed: TimeoutError: the environment did not answer (2x)" in msg


def test_describe_failures_lists_the_most_frequent_reasons_first():
    text = describe_failures({"a": 1, "b": 5, "c": 2, "d": 1}, samples=12, top=2)
    assert text == "9/12 samples failed: b (5x); c (2x); 2 other reasons"


def traj(status: Status, mask: list[int], reason: str | None = None) -> Trajectory:
    n = len(mask)
    return Trajectory(
        group_id="g",
        prompt_ids=[1],
        response_ids=[5] * n,
        loss_mask=mask,
        rollout_logprobs=[0.0] * n,
        versions=[0] * n,
        status=status,
        metadata={"reason": reason} if reason else {},
    )


def test_trainable_group_is_defined_by_how_its_episodes_ended():
    ok, failed = traj(Status.COMPLETED, [1, 1]), traj(Status.FAILED, [1], "ValueError: boom")
    assert TrajectoryGroup(group_id="g", trajectories=[ok, ok, ok, failed]).trainable
    assert not TrajectoryGroup(group_id="g", trajectories=[ok, ok, failed, failed]).trainable
    assert failed.untrainable_reason == "ValueError: boom" and ok.untrainable_reason is None
    assert traj(Status.COMPLETED, [0, 0]).untrainable_reason == "no model-generated tokens"
    assert traj(Status.ABORTED, [1]).untrainable_reason == "aborted"


def test_the_staleness_filter_counts_trainable_groups_and_failure_reasons():
    from slime_rl.config import load_config
    from slime_rl.trainer.train_step import plan_step

    failed = [traj(Status.FAILED, [1], "KeyError: 'answer'")] * 2
    groups = [
        TrajectoryGroup(group_id="g", trajectories=failed),
        TrajectoryGroup(group_id="g", trajectories=[traj(Status.COMPLETED, [1])] * 2),
    ]
    report = plan_step(groups, version=0, cfg=load_config(None, [])).report.metrics()
    assert report["trainable_groups"] == 1 and report["failure_reasons"] == {"KeyError: 'answer'": 2}
