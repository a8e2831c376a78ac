"""Partial rollouts: a request aborted in the long tail keeps its tokens, logprobs and per-token versions and is
resumed later from them (with max_new_tokens reduced by what it already has), or dropped once its first token is
more than tau versions behind the trainer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Partial:
    key: str  # episode id: resumes route to the same engine
    sample: dict[str, Any]
    group_id: str
    sample_index: int
    prompt_ids: list[int]
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)

    def remaining(self, max_new_tokens: int) -> int:
        return max_new_tokens - len(self.output_ids)

    def first_version(self) -> int | None:
        return self.versions[0] if self.versions else None

    def extend(self, ids: list[int], logprobs: list[float], versions: list[int]) -> None:
        self.output_ids += ids
        self.logprobs += logprobs
        self.versions += versions


class PartialStore:
    def __init__(self, tau: int):
        self.tau = tau
        self.items: dict[str, Partial] = {}
        self.dropped = 0
        self.resumed = 0

    def put(self, p: Partial) -> None:
        self.items[p.key] = p

    def take_resumable(self, trainer_version: int) -> list[Partial]:
        """Everything still fresh enough to finish; stale ones are dropped and counted."""
        fresh = []
        for p in self.items.values():
            first = p.first_version()
            if first is not None and trainer_version - first > self.tau:
                self.dropped += 1
            else:
                fresh.append(p)
        self.items.clear()
        self.resumed += len(fresh)
        return fresh

    def __len__(self) -> int:
        return len(self.items)
