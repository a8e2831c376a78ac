"""Pack trajectories into micro-batches under a token budget (first-fit decreasing), with no padding: each
micro-batch is one row of concatenated sequences, separated by a block-diagonal attention mask."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from slime_rl.trajectory import Trajectory


@dataclass
class PackedBatch:
    tokens: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    cu_seqlens: torch.Tensor  # [n + 1]
    items: list[int]  # indices of the packed trajectories in the caller's list

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[1])


def pack(trajs: list[Trajectory], budget: int) -> list[PackedBatch]:
    lengths = [t.num_tokens for t in trajs]
    for i, n in enumerate(lengths):
        if n > budget:
            raise ValueError(f"trajectory {trajs[i].id} has {n} tokens, more than trainer.micro_batch_tokens={budget}")
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(trajs)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(budget - lengths[i])
    return [_build(trajs, items) for items in bins]


def _build(trajs: list[Trajectory], items: list[int]) -> PackedBatch:
    seqs = [trajs[i].prompt_ids + trajs[i].response_ids for i in items]
    lens = [len(s) for s in seqs]
    tokens = torch.tensor([tok for s in seqs for tok in s], dtype=torch.long)[None]
    position_ids = torch.cat([torch.arange(n) for n in lens])[None]
    cu = torch.zeros(len(lens) + 1, dtype=torch.long)
    cu[1:] = torch.tensor(lens).cumsum(0)
    return PackedBatch(tokens, position_ids, cu, items)


def padding_waste(batches: list[PackedBatch], budget: int) -> float:
    """Fraction of the budgeted token slots left empty (what a fixed-shape batch would have padded)."""
    if not batches:
        return 0.0
    return 1.0 - sum(b.num_tokens for b in batches) / (budget * len(batches))
