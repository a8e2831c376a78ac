"""Pack trajectories into micro-batches under a token budget, with no padding: each micro-batch is one row of
concatenated sequences (cu_seqlens marks the boundaries; the model attends within each sequence only).

Bins: first-fit decreasing finds how many micro-batches the budget needs; the sequences are then spread over that
many bins longest-first onto the least-loaded one that fits, so the micro-batches come out near-equal in length
(attention cost grows with the square of a row's length, and a fixed-shape or data-parallel consumer waits for the
longest). A sequence longer than the budget gets a micro-batch of its own rather than failing the step.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch

from slime_rl.trajectory import Trajectory


@dataclass
class PackedBatch:
    tokens: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T], restarting at 0 for every sequence
    cu_seqlens: torch.Tensor  # [n + 1]
    items: list[int]  # indices of the packed trajectories in the caller's list, in row order

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[1])


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


def pack(trajs: list[Trajectory], budget: int) -> list[PackedBatch]:
    if budget < 1:
        raise ValueError(f"trainer.micro_batch_tokens must be positive, got {budget}")
    lengths = [t.num_tokens for t in trajs]
    big = [i for i, n in enumerate(lengths) if n > budget]
    fit = [i for i, n in enumerate(lengths) if n <= budget]
    bins = [[fit[j] for j in b] for b in balanced_bins([lengths[i] for i in fit], budget)]
    return [_build(trajs, items) for items in bins + [[i] for i in big]]


def _build(trajs: list[Trajectory], items: list[int]) -> PackedBatch:
    seqs = [trajs[i].prompt_ids + trajs[i].response_ids for i in items]
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    tokens = torch.tensor([tok for s in seqs for tok in s], dtype=torch.long)[None]
    cu = torch.zeros(len(seqs) + 1, dtype=torch.long)
    cu[1:] = lens.cumsum(0)
    position_ids = (torch.arange(int(cu[-1])) - torch.repeat_interleave(cu[:-1], lens))[None]
    return PackedBatch(tokens, position_ids, cu, items)


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
