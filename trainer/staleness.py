"""Staleness control on the trainer side, as a small pure class.

lag = trainer version - version of a trajectory's first generated token; a trajectory with lag > tau is stale.
Untrainable ones (failed, aborted, nothing generated) are invalid. A group keeps going when more than half of its
samples are valid: the invalid slots are filled by repeating valid samples in turn, so the group keeps its size
and its GRPO statistics stay comparable. Otherwise the whole group is dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from slime_rl.staleness import StalenessRule
from slime_rl.trajectory import Trajectory, TrajectoryGroup


@dataclass
class StalenessReport:
    kept_groups: list[TrajectoryGroup] = field(default_factory=list)  # padded to their original size
    dropped_groups: list[TrajectoryGroup] = field(default_factory=list)
    kept_ids: list[str] = field(default_factory=list)  # trajectories trained (each once, before padding)
    dropped_ids: list[str] = field(default_factory=list)  # everything else that came in
    padded: int = 0  # slots filled by repeating a valid trajectory
    dropped_stale: int = 0  # trajectories over tau
    dropped_invalid: int = 0  # failed / aborted / nothing to train on
    dropped_with_group: int = 0  # valid trajectories dropped because their group had too few valid ones
    lag_hist: Counter = field(default_factory=Counter)  # lag -> count, over every trainable trajectory
    trainable_groups: int = 0  # groups that meet TrajectoryGroup.trainable, kept or not
    failures: Counter = field(default_factory=Counter)  # untrainable reason -> count

    @property
    def kept(self) -> int:
        return len(self.kept_ids)

    def metrics(self) -> dict:
        return {
            "kept": self.kept,
            "padded": self.padded,
            "dropped_stale": self.dropped_stale,
            "dropped_invalid": self.dropped_invalid,
            "dropped_with_group": self.dropped_with_group,
            "dropped_groups": len(self.dropped_groups),
            "kept_groups": len(self.kept_groups),
            "staleness_hist": {str(k): v for k, v in sorted(self.lag_hist.items())},
            "trainable_groups": self.trainable_groups,
            "failure_reasons": dict(self.failures.most_common(10)),
        }


class StalenessFilter:
    """Applies the run's staleness rule (slime_rl/staleness.py) to the groups of a step."""

    def __init__(self, rule: StalenessRule):
        self.rule = rule

    def apply(self, groups: list[TrajectoryGroup], trainer_version: int) -> StalenessReport:
        rep = StalenessReport()
        for group in groups:
            rep.trainable_groups += group.trainable
            valid: list[Trajectory] = []
            for t in group.trajectories:
                if not t.trainable:
                    rep.dropped_invalid += 1
                    rep.failures[t.untrainable_reason] += 1
                    continue
                lag = self.rule.lag(t.first_version, trainer_version)
                rep.lag_hist[lag] += 1
                if lag > self.rule.tau:
                    rep.dropped_stale += 1
                else:
                    valid.append(t)
            size = len(group.trajectories)
            valid_ids = {t.id for t in valid}
            rep.dropped_ids += [t.id for t in group.trajectories if t.id not in valid_ids]
            if 2 * len(valid) > size:
                fill = [valid[i % len(valid)] for i in range(size - len(valid))]
                rep.padded += len(fill)
                rep.kept_ids += [t.id for t in valid]
                rep.kept_groups.append(group.model_copy(update={"trajectories": valid + fill}))
            else:
                rep.dropped_with_group += len(valid)
                rep.dropped_ids += [t.id for t in valid]
                rep.dropped_groups.append(group)
        return rep
