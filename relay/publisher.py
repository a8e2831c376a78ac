"""The trainer-side handle: serialise the weights once into the object store, hand the root relay a reference,
return. The serialisation buffer is kept for the process's next publication (same model, same size): writing into
pages that are already mapped is what makes packing 0.5 GB cheap."""

from __future__ import annotations

import threading
import time

import numpy as np
import ray
import torch

from slime_rl.results import PushReceipt

from .versions import pack_weights

_scratch: np.ndarray | None = None
_scratch_lock = threading.Lock()  # one packing at a time per process: the next one overwrites the buffer
PUT_TIMEOUT_S = 600.0  # the root relay verifies the blob (checksums) in place: minutes only if it is stuck


class WeightPublisher:
    def __init__(self, root):
        self.root = root

    def publish(self, version: int, named_tensors: dict[str, torch.Tensor]) -> PushReceipt:
        global _scratch
        started = time.perf_counter()
        with _scratch_lock:
            manifest, blob = pack_weights(version, named_tensors, out=_scratch)
            _scratch = blob.base if blob.base is not None else blob
            ref = ray.put(blob)  # copied into the object store: the buffer is free again
        # wrapped: the root reads the object store itself
        taken = ray.get(self.root.put.remote(manifest, [ref]), timeout=PUT_TIMEOUT_S)
        return PushReceipt(
            version=version,
            bytes=manifest.total_bytes,
            blocked_s=time.perf_counter() - started,
            accepted=taken,
            published_at=time.time(),
        )
