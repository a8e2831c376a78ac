"""Relay workers (Ray actors): the trainer hands a version to the root once; each relay stores it, then forwards
it to its children in the fan-out tree, off the trainer's path. Engine syncers fetch from their relay."""
from __future__ import annotations

import ray

from .versions import Manifest, VersionStore

WEIGHTS_STREAM = "slime:weights"


@ray.remote(num_cpus=0, max_concurrency=8)
class RelayWorker:
    def __init__(self, name: str, keep: int, redis_url: str):
        from slime_rl.buffer import connect

        self.name = name
        self.store = VersionStore(keep=keep)
        self.children: list = []
        self.redis = connect(redis_url)  # rides out a Redis restart

    def set_children(self, children: list) -> None:
        self.children = children

    def put(self, manifest: Manifest, blob: bytes, announce: bool = False) -> bool:
        """Store a version (verified) and start forwarding it; returns once this relay holds it."""
        taken = self.store.offer(manifest, blob)
        if taken:
            ref = ray.put(blob)  # children pull from the object store: one copy, not one per child
            for child in self.children:
                child.put.remote(manifest, ref)  # a top-level ObjectRef argument arrives resolved
            self.redis.xadd(WEIGHTS_STREAM, {"version": manifest.version, "relay": self.name}, maxlen=1000)
        return taken

    def newest(self) -> int:
        return self.store.newest

    def fetch(self, version: int) -> tuple[Manifest, bytes] | None:
        return self.store.get(version)

    def ping(self) -> str:
        return self.name
