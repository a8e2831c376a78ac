"""Every Redis key and stream a run uses, named from the run's id: the one place that spells them.

All names share the prefix `slime:{<run id>}:`, so runs with different ids never touch each other's keys and can
share one Redis. The braces are a Redis Cluster hash tag: all keys of a run map to one slot, which the buffer's
multi-key transactions and Lua script need there.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RunConfig

# no ':' or braces: the id must not be able to reproduce another run's prefix or break the hash tag
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_RUN_ID = re.compile(RUN_ID_PATTERN)


def new_run_id(name: str) -> str:
    """`name` made id-safe plus a short random suffix, e.g. `math-demo-3fa9c1`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:80] or "run"
    return f"{stem}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunKeys:
    run_id: str

    def __post_init__(self) -> None:
        if not _RUN_ID.match(self.run_id):
            raise ValueError(f"run id {self.run_id!r} must match {RUN_ID_PATTERN}")

    @classmethod
    def of(cls, cfg: RunConfig) -> RunKeys:
        return cls(cfg.run_id)

    @property
    def prefix(self) -> str:
        return f"slime:{{{self.run_id}}}:"

    # --- the trajectory buffer ----------------------------------------------------------------------------
    @property
    def trajectories(self) -> str:
        """The stream of TrajectoryGroups (consumer group of the trainers)."""
        return self.prefix + "traj"

    @property
    def dead_letters(self) -> str:
        """Malformed trajectory entries, with the reason."""
        return self.prefix + "traj:dead"

    @property
    def counters(self) -> str:
        """Hash: produced, consumed, dead_lettered, duplicates."""
        return self.prefix + "traj:counters"

    @property
    def trained(self) -> str:
        """Set of the trajectory ids already trained (dedupe of redeliveries)."""
        return self.prefix + "traj:trained"

    @property
    def prompt_progress(self) -> str:
        """Hash: rollout worker index -> its PromptProgress, written with each of its pushes (restored on restart)."""
        return self.prefix + "traj:progress"

    @property
    def policy_version(self) -> str:
        """The trainer's current policy version, read by the rollout workers."""
        return self.prefix + "policy_version"

    # --- the rest of the run ------------------------------------------------------------------------------
    @property
    def metrics(self) -> str:
        """Capped stream of metric records (the dashboard's live feed)."""
        return self.prefix + "metrics"

    @property
    def control(self) -> str:
        """Stream of control actions from the dashboard (pause/resume rollouts, checkpoint)."""
        return self.prefix + "control"

    @property
    def weights(self) -> str:
        """Stream of weight versions announced by the relays, read by the engine syncers."""
        return self.prefix + "weights"

    def all(self) -> dict[str, str]:
        """Every key of the run by role (for cleanup and for tests)."""
        roles = (
            "trajectories",
            "dead_letters",
            "counters",
            "trained",
            "prompt_progress",
            "policy_version",
            "metrics",
            "control",
            "weights",
        )
        return {role: getattr(self, role) for role in roles}
