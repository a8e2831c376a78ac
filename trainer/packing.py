"""Pack trajectories into micro-batches under a token budget, with no padding: each micro-batch is one row of
concatenated segments (cu_seqlens marks the boundaries; the model attends within each segment only, plus the
prefix segment it continues, if any).

Shared prompts (`share_prefix`): the members of a GRPO group all start with the same prompt, so they can be
packed as a tree: the prompt (all but its last token) once, then one branch per member, [last prompt token] +
response, that attends to the prompt and to itself. Positions continue the prompt's, so every logprob is the one
the flat layout gives, for a fraction of the tokens when prompts are long against responses. The last prompt
token is repeated per branch because its logits predict each member's own first response token.

Bins: first-fit decreasing finds how many micro-batches the budget needs; the sequences are then spread over that
many bins longest-first onto the least-loaded one that fits, so the micro-batches come out near-equal in length
(attention cost grows with the square of a row's length, and a fixed-shape or data-parallel consumer waits for the
longest). A sequence longer than the budget gets a micro-batch of its own rather than failing the step.

A shared group is one large unit, which can leave the bins uneven. The packer then tries splitting each group in
two (each half repeats the prompt), one split at a time, and keeps the layout whose padded size (micro-batches x
longest) is smallest: a split is kept only when the padding it removes outweighs the prompt tokens it adds.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch

from slime_rl.trajectory import Trajectory


@dataclass
class PackedBatch:
    tokens: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]: each token's position in its own trajectory
    cu_seqlens: torch.Tensor  # [n + 1] segment boundaries
    items: list[int]  # indices of the packed trajectories in the caller's list, in row order
    response_starts: list[int]  # per item: the row index whose logits predict its first response token
    prefix_of: torch.Tensor | None = None  # [n] the segment each segment continues (-1: none); None: no sharing

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[1])

    def model_inputs(self) -> tuple[torch.Tensor, ...]:
        return self.tokens, self.position_ids, self.cu_seqlens, self.prefix_of


@dataclass
class _Unit:
    """Trajectories that go into a row together: one alone, or several sharing `prefix` (prompt minus last token)."""

    items: list[int]
    prefix: list[int]
    num_tokens: int


_MAX_SPLITS = 8


def first_fit_decreasing(lengths: list[int], budget: int) -> list[list[int]]:
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(budget - lengths[i])
    return bins


def balanced_bins(lengths: list[int], budget: int) -> list[list[int]]:
    """As many bins as first-fit decreasing needs, filled longest-first into the least-loaded bin that fits."""
    ffd = first_fit_decreasing(lengths, budget)
    n = len(ffd)
    heap = [(0, b) for b in range(n)]  # (load, bin)
    bins: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        load, b = heapq.heappop(heap)
        if load and load + lengths[i] > budget:
            return ffd  # the least-loaded bin is full, so is every other: keep the first-fit layout
        bins[b].append(i)
        heapq.heappush(heap, (load + lengths[i], b))
    return [b for b in bins if b]


def pack(trajs: list[Trajectory], budget: int, share_prefix: bool = False) -> list[PackedBatch]:
    if budget < 1:
        raise ValueError(f"trainer.micro_batch_tokens must be positive, got {budget}")
    units = (
        _shared_units(trajs, budget) if share_prefix else [_Unit([i], [], t.num_tokens) for i, t in enumerate(trajs)]
    )
    layout = _rebalanced(trajs, units, budget) if share_prefix else _layout(units, budget)
    return [_build(trajs, b) for b in layout]


def _layout(units: list[_Unit], budget: int) -> list[list[_Unit]]:
    big = [u for u in units if u.num_tokens > budget]
    fit = [u for u in units if u.num_tokens <= budget]
    bins = [[fit[j] for j in b] for b in balanced_bins([u.num_tokens for u in fit], budget)]
    return bins + [[u] for u in big]


def _padded_size(layout: list[list[_Unit]]) -> tuple[int, int]:
    """(micro-batches x longest row, real tokens): what a fixed-shape consumer computes, then what a packed one does."""
    rows = [sum(u.num_tokens for u in b) for b in layout]
    return len(rows) * max(rows, default=0), sum(rows)


def _rebalanced(trajs: list[Trajectory], units: list[_Unit], budget: int) -> list[list[_Unit]]:
    """Split one shared group in two at a time, the split that leaves the smallest padded size, and keep the best
    layout seen (a bounded number of splits: each one adds a prompt's tokens)."""
    best = _layout(units, budget)
    for _ in range(_MAX_SPLITS):
        trials = [
            (_layout(split, budget), split)
            for split in ([v for v in units if v is not u] + _halves(trajs, u) for u in units if len(u.items) > 1)
        ]
        if not trials:
            break
        layout, units = min(trials, key=lambda t: _padded_size(t[0]))
        if _padded_size(layout) < _padded_size(best):
            best = layout
    return best


def _halves(trajs: list[Trajectory], group: _Unit) -> list[_Unit]:
    """The group's members in two near-equal halves, each a unit of its own (largest member to the lighter half)."""
    halves: list[list[int]] = [[], []]
    sizes = [0, 0]
    for i in sorted(group.items, key=lambda i: -trajs[i].num_tokens):
        h = sizes.index(min(sizes))
        halves[h].append(i)
        sizes[h] += trajs[i].num_tokens
    return [u for h in halves for u in _group_units(trajs, h, group.prefix)]


def _group_units(trajs: list[Trajectory], members: list[int], prefix: list[int]) -> list[_Unit]:
    """Members sharing `prefix` as one tree unit; a lone member (or an empty prefix) in the flat layout."""
    if len(members) > 1 and prefix:
        return [_Unit(members, prefix, len(prefix) + sum(1 + len(trajs[i].response_ids) for i in members))]
    return [_Unit([i], [], trajs[i].num_tokens) for i in members]


def _shared_units(trajs: list[Trajectory], budget: int) -> list[_Unit]:
    """Trajectories with the same prompt share it, in as few units as the budget allows; the rest go alone."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(trajs):
        by_prompt.setdefault(tuple(t.prompt_ids), []).append(i)
    units: list[_Unit] = []
    for prompt, members in by_prompt.items():
        prefix = list(prompt[:-1])
        chunks: list[list[int]] = [[]]
        size = len(prefix)
        for i in sorted(members, key=lambda i: -trajs[i].num_tokens):
            branch = 1 + len(trajs[i].response_ids)
            if chunks[-1] and size + branch > budget:
                chunks.append([])
                size = len(prefix)
            chunks[-1].append(i)
            size += branch
        for chunk in chunks:
            units.extend(_group_units(trajs, chunk, prefix))
    return units


def _build(trajs: list[Trajectory], units: list[_Unit]) -> PackedBatch:
    tokens: list[int] = []
    positions: list[int] = []
    seg_lens: list[int] = []
    prefix_of: list[int] = []
    items: list[int] = []
    starts: list[int] = []

    def segment(seq: list[int], first_pos: int, parent: int) -> int:
        tokens.extend(seq)
        positions.extend(range(first_pos, first_pos + len(seq)))
        seg_lens.append(len(seq))
        prefix_of.append(parent)
        return len(tokens) - len(seq)

    for u in units:
        if u.prefix:
            segment(u.prefix, 0, -1)
        parent = len(seg_lens) - 1 if u.prefix else -1
        for i in u.items:
            t = trajs[i]
            p = len(t.prompt_ids)
            if u.prefix:  # branch: [last prompt token] + response, continuing the prefix's positions
                starts.append(segment(t.prompt_ids[-1:] + t.response_ids, p - 1, parent))
            else:
                starts.append(segment(t.prompt_ids + t.response_ids, 0, -1) + p - 1)
            items.append(i)
    cu = torch.zeros(len(seg_lens) + 1, dtype=torch.long)
    cu[1:] = torch.tensor(seg_lens, dtype=torch.long).cumsum(0)
    shared = torch.tensor(prefix_of, dtype=torch.long) if any(x >= 0 for x in prefix_of) else None
    return PackedBatch(
        torch.tensor(tokens, dtype=torch.long)[None],
        torch.tensor(positions, dtype=torch.long)[None],
        cu,
        items,
        starts,
        shared,
    )


def padding_waste(batches: list[PackedBatch]) -> float:
    """The padding a fixed-shape [micro-batches, longest] tensor of these rows would hold, as a fraction of it
    (the rows themselves carry none)."""
    if not batches:
        return 0.0
    return 1.0 - sum(b.num_tokens for b in batches) / (len(batches) * max(b.num_tokens for b in batches))


def budget_fill(batches: list[PackedBatch], budget: int) -> float:
    """Tokens over micro-batches x budget: how full the budgeted micro-batches are."""
    if not batches:
        return 0.0
    return sum(b.num_tokens for b in batches) / (len(batches) * budget)
