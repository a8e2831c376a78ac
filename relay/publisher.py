"""The trainer-side handle: serialise the weights once, hand them to the root relay, return."""
from __future__ import annotations

import time

import ray
import torch

from .versions import pack_weights


class WeightPublisher:
    def __init__(self, root, chunk_bytes: int):
        self.root = root
        self.chunk_bytes = chunk_bytes

    def publish(self, version: int, named_tensors: dict[str, torch.Tensor]) -> dict:
        started = time.perf_counter()
        manifest, blob = pack_weights(version, named_tensors, self.chunk_bytes)
        taken = ray.get(self.root.put.remote(manifest, blob))
        blocked = time.perf_counter() - started
        return {"version": version, "bytes": len(blob), "blocked_s": blocked, "accepted": taken,
                "published_at": time.time()}
