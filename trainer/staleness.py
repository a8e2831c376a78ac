"""Staleness control on the trainer side, as a small pure class.

lag = trainer version - version of a trajectory's first generated token. A trajectory with lag > tau is stale.
A group keeps going when more than half its samples are valid (stale or untrainable ones are replaced by
repeating valid ones, so the group size and GRPO statistics stay comparable); otherwise the whole group is dropped.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from slime_rl.trajectory import Trajectory, TrajectoryGroup


@dataclass
class StalenessReport:
    kept_groups: list[TrajectoryGroup] = field(default_factory=list)
    dropped_groups: list[TrajectoryGroup] = field(default_factory=list)
    kept: int = 0  # trajectories trained as themselves
    padded: int = 0  # slots filled by repeating a valid trajectory
    dropped_stale: int = 0  # trajectories dropped for staleness
    dropped_invalid: int = 0  # failed/aborted/empty trajectories
    lag_hist: Counter = field(default_factory=Counter)


class StalenessFilter:
    def __init__(self, tau: int):
        self.tau = tau

    def lag(self, traj: Trajectory, trainer_version: int) -> int:
        return max(0, trainer_version - traj.first_version)

    def apply(self, groups: list[TrajectoryGroup], trainer_version: int) -> StalenessReport:
        rep = StalenessReport()
        for group in groups:
            valid: list[Trajectory] = []
            for t in group.trajectories:
                if not t.trainable:
                    rep.dropped_invalid += 1
                    continue
                lag = self.lag(t, trainer_version)
                rep.lag_hist[lag] += 1
                if lag > self.tau:
                    rep.dropped_stale += 1
                else:
                    valid.append(t)
            size = len(group.trajectories)
            if 2 * len(valid) > size:
                padded = [valid[i % len(valid)] for i in range(size - len(valid))]
                rep.kept += len(valid)
                rep.padded += len(padded)
                rep.kept_groups.append(group.model_copy(update={"trajectories": valid + padded}))
            else:
                rep.dropped_groups.append(group)
        return rep
