"""Prompt datasets for rollout workers.

Rows come from the environment (`load_dataset` of the Env or EnvFactory class: a JSONL file by default, generated
data for the examples), with `env.dataset_kwargs` checked against its signature.
Workers stride through one shared order without overlap (worker i takes positions i, i+W, i+2W, ...), and every
epoch is reshuffled with a seed derived from (seed, epoch), so all workers agree on the order without talking.
"""

from __future__ import annotations

import random
from typing import Any

from slime_rl.env_api import EnvError, EnvPlugin, check_kwargs, dataset_loader


class PromptDataset:
    def __init__(
        self,
        rows: list[dict[str, Any]],
        worker_index: int = 0,
        num_workers: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        name: str = "dataset",
    ):
        if not rows:
            raise EnvError(f"{name}: the dataset is empty")
        if worker_index < 0 or num_workers < 1:
            raise ValueError(f"worker_index {worker_index} / num_workers {num_workers}: need index >= 0, workers >= 1")
        bad = [i for i, r in enumerate(rows[:1000]) if not isinstance(r, dict)]
        if bad:
            raise EnvError(f"{name}: row {bad[0]} is {type(rows[bad[0]]).__name__}, expected a dict")
        self.rows, self.shuffle, self.seed = rows, shuffle, seed
        self.worker_index, self.num_workers = worker_index, num_workers
        self.first = worker_index % num_workers  # this worker's first position in the endless, epoch-shuffled
        # stream (an extra worker beyond num_workers, e.g. the evaluation one, shares a producer's stride)
        self._epoch, self._order = -1, list(range(len(rows)))

    def __len__(self) -> int:
        return len(self.rows)

    def _index_at(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.rows))
        if epoch != self._epoch:
            self._order = list(range(len(self.rows)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(self._order)
            self._epoch = epoch
        return self._order[offset]

    def position(self, slot: int) -> int:
        """Where this worker's slot-th prompt sits in the shared stream."""
        return self.first + slot * self.num_workers

    def at(self, slot: int) -> tuple[int, dict[str, Any]]:
        """(row index, row): this worker's slot-th prompt (slots 0, 1, 2, ... are its share of the order; which ones
        are done is the worker's PromptProgress)."""
        i = self._index_at(self.position(slot))
        return i, self.rows[i]


def load_prompts(plugin: EnvPlugin, path: Any, split: str, dataset_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The environment's rows for a split, with errors that name the environment (and the config field)."""
    loader = dataset_loader(plugin)
    check_kwargs(loader, dataset_kwargs, "env.dataset_kwargs", skip=2)  # (path, split) are ours
    try:
        rows = loader(path, split, **dataset_kwargs)
    except EnvError:
        raise
    except FileNotFoundError as exc:
        raise EnvError(f"{plugin.__name__}: {split} dataset not found: {exc.filename}") from None
    except TypeError as exc:
        raise EnvError(f"{plugin.__name__}.load_dataset: {exc} (check env.dataset_kwargs)") from None
    if not isinstance(rows, list):
        raise EnvError(f"{plugin.__name__}.load_dataset returned {type(rows).__name__}, expected a list of dicts")
    return rows
