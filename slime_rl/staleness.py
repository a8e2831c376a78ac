"""The one owner of the policy version and the staleness rule (in the spirit of AReaL's staleness manager).

Policy version: the number of optimizer steps in the trainer's weights. The trainer is its only writer; it
publishes it to the run's Redis after every step (`PolicyVersion`), and everything else asks there. An engine's
weight version is a fact about that engine (which weights it holds); the rollout workers ask the engines for it.

Staleness of a trajectory: lag = trainer version - version of its oldest model token (a partial rollout resumed
under newer weights carries several versions; its oldest decides). With bound tau (`rollout.staleness_tau`):
- admission (rollout workers): with v = the version the engines hold (never ahead of the trainer), all workers
  together may have started at most (v + tau + 1) * groups_per_step groups. Groups are trained in order, so group
  k is trained at trainer version ceil(k / groups_per_step) - 1 and its lag stays within tau;
- resumption (partial rollouts): an aborted group whose oldest token is more than tau behind is dropped, not resumed;
- the trainer's filter: a trajectory more than tau behind is not trained (trainer/staleness.py applies it per group).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from .config import RunConfig
from .run_keys import RunKeys


@dataclass(frozen=True)
class StalenessRule:
    tau: int
    groups_per_step: int
    num_workers: int = 1

    @classmethod
    def of(cls, cfg: RunConfig) -> StalenessRule:
        return cls(
            tau=cfg.rollout.staleness_tau,
            groups_per_step=cfg.rollout.groups_per_step,
            num_workers=cfg.rollout.num_workers,
        )

    def __post_init__(self) -> None:
        if self.tau < 0:
            raise ValueError(f"staleness tau must be >= 0, got {self.tau}")

    def capacity(self, version: int, worker_index: int = 0) -> int:
        """How many groups this worker may have started while the engines hold `version` (its share of the total)."""
        total = (version + self.tau + 1) * self.groups_per_step
        n = self.num_workers
        return total // n + (1 if worker_index < total % n else 0)

    @staticmethod
    def lag(first_version: int, trainer_version: int) -> int:
        # a trajectory from a newer version than the trainer (e.g. after a resume) is not stale
        return max(0, trainer_version - first_version)

    def is_stale(self, first_version: int | None, trainer_version: int) -> bool:
        """None: nothing generated yet, so nothing can be stale."""
        return first_version is not None and self.lag(first_version, trainer_version) > self.tau


class PolicyVersion:
    """The trainer's policy version as the run sees it (the run's Redis)."""

    def __init__(self, r: redis.Redis, keys: RunKeys):
        self.r, self.key = r, keys.policy_version

    def set(self, version: int) -> None:
        self.r.set(self.key, int(version))

    def get(self) -> int:
        raw = self.r.get(self.key)
        return int(raw) if raw is not None else 0
