"""Partial rollouts: a request aborted in the long tail keeps its tokens, logprobs and per-token versions and is
resumed later from them (with max_new_tokens reduced by what it already has), or dropped once its first token is
more than tau versions behind the trainer.

Life of a group:   running --(all samples finish)--> complete --> pushed
                   running --(tail abort)--> waiting (done samples + partials) --(take, fresh)--> running
                                                                              --(take, stale)--> dropped
Pure logic: no I/O, tested without engines or Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slime_rl.staleness import StalenessRule
from slime_rl.trajectory import Trajectory


@dataclass
class Partial:
    """One aborted sample: everything the engine produced for it so far."""

    key: str  # episode id: a resume routes to the same engine (prefix-cache affinity)
    sample: dict[str, Any]
    group_id: str
    sample_index: int
    prompt_ids: list[int]
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    aborts: int = 1  # how many times it was cut off

    def __post_init__(self) -> None:
        if not (len(self.output_ids) == len(self.logprobs) == len(self.versions)):
            raise ValueError(
                f"partial {self.key}: {len(self.output_ids)} tokens, {len(self.logprobs)} logprobs, "
                f"{len(self.versions)} versions"
            )

    def remaining(self, max_new_tokens: int) -> int:
        """The budget of the resumed request: the original one less what was already generated."""
        return max(0, max_new_tokens - len(self.output_ids))

    def first_version(self) -> int | None:
        return self.versions[0] if self.versions else None


@dataclass
class PendingGroup:
    """The samples of one prompt: finished trajectories plus aborted partials still to resume."""

    sample: dict[str, Any]
    group_id: str
    prompt_index: int
    done: list[Trajectory] = field(default_factory=list)
    partials: list[Partial] = field(default_factory=list)
    slot: int = -1  # which of its worker's prompts (see progress.PromptProgress)

    def first_version(self) -> int | None:
        """The oldest policy version any of its tokens came from (the group's staleness clock)."""
        firsts = [p.first_version() for p in self.partials] + [t.first_version for t in self.done]
        firsts = [v for v in firsts if v is not None and v >= 0]
        return min(firsts) if firsts else None

    def is_complete(self, group_size: int) -> bool:
        return not self.partials and len(self.done) == group_size

    def todo(self, group_size: int) -> list[tuple[int, Partial | None]]:
        """(sample index, partial to resume or None for a fresh sample) for everything not yet done."""
        if self.partials:
            return [(p.sample_index, p) for p in self.partials]
        have = {t.sample_index for t in self.done}
        return [(i, None) for i in range(group_size) if i not in have]


class PartialStore:
    """Groups waiting to be resumed. `take` hands back the fresh ones and drops (and counts) the stale ones."""

    def __init__(self, staleness: StalenessRule):
        self.staleness = staleness
        self.waiting: list[PendingGroup] = []
        self.dropped_groups = 0
        self.dropped_samples = 0
        self.resumed = 0

    def put(self, group: PendingGroup) -> None:
        self.waiting.append(group)

    def take(self, trainer_version: int, limit: int | None = None) -> list[PendingGroup]:
        """Up to `limit` fresh groups, oldest first; every stale group is dropped on the way."""
        fresh, keep = [], []
        for g in self.waiting:
            if self.staleness.is_stale(g.first_version(), trainer_version):
                self.dropped_groups += 1
                self.dropped_samples += len(g.partials) + len(g.done)
            elif limit is None or len(fresh) < limit:
                fresh.append(g)
            else:
                keep.append(g)
        self.waiting = keep
        self.resumed += sum(len(g.partials) for g in fresh)
        return fresh

    def __len__(self) -> int:
        return len(self.waiting)

    def num_partials(self) -> int:
        return sum(len(g.partials) for g in self.waiting)
