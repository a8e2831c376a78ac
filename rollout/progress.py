"""A rollout worker's place in its share of the prompt order, kept so that a restarted worker neither skips nor
repeats prompts.

A worker runs its prompts in slots 0, 1, 2, ... (slot k is its k-th prompt of the shared order; see
PromptDataset.at). Groups finish out of order, so the durable state is a low-water mark (the lowest slot not yet
finished) plus the finished slots above it. It is written in the same transaction as each group's XADD, so it never
claims a group the buffer does not hold and never forgets one it does.

A slot is finished when its group was pushed (whatever the trainer later does with it: trained, or dropped as
stale, it was consumed) or when the worker dropped the group on purpose (stale partials, a discarded long tail), as
an uninterrupted run would have. A restarted worker therefore redoes exactly the slots that were in flight. A slot
given back (its group cut short by stop()) is handed out again first.

Pure logic: no I/O, tested without Ray or Redis.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field


@dataclass
class PromptProgress:
    low: int = 0  # the lowest slot not finished
    above: set[int] = field(default_factory=set)  # finished slots above `low`
    _next: int = field(init=False, compare=False)  # the lowest slot never handed out by this process
    _returned: list[int] = field(init=False, compare=False, default_factory=list)  # a heap of slots given back

    def __post_init__(self) -> None:
        if self.low < 0 or any(k <= self.low for k in self.above):
            raise ValueError(
                f"prompt progress: low {self.low}, finished above it {sorted(self.above)}: need "
                "low >= 0 and every finished slot above low"
            )
        self._next = self.low

    @property
    def finished(self) -> int:
        """How many slots are finished (the worker's groups started and settled so far)."""
        return self.low + len(self.above)

    def next_slot(self) -> int:
        """The slot to run next: one given back first, else the lowest one neither handed out nor finished."""
        if self._returned:
            return heapq.heappop(self._returned)
        self._next = max(self._next, self.low)  # the mark may have passed it: finished slots are not kept below it
        while self._next in self.above:
            self._next += 1
        self._next += 1
        return self._next - 1

    def finish(self, slot: int) -> None:
        if slot < self.low or slot in self.above:
            raise ValueError(f"prompt slot {slot} finished twice")
        self.above.add(slot)
        while self.low in self.above:
            self.above.remove(self.low)
            self.low += 1

    def give_back(self, slot: int) -> None:
        """A slot handed out but not finished (its group was cut short): hand it out again before new ones."""
        if slot < self.low or slot in self.above:
            raise ValueError(f"prompt slot {slot} is finished: it cannot be given back")
        heapq.heappush(self._returned, slot)

    def to_wire(self) -> str:
        return json.dumps({"low": self.low, "above": sorted(self.above)}, separators=(",", ":"))

    @classmethod
    def from_wire(cls, raw: str | bytes) -> PromptProgress:
        try:
            d = json.loads(raw)
            return cls(int(d["low"]), {int(k) for k in d["above"]})
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"prompt progress {raw!r}: {exc}") from None
