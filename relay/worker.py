"""Relay workers (Ray actors): the trainer hands a version to the root once, as an object-store reference; each
relay checks it (reading the object store in place, no copy), keeps the reference, then forwards it to its children
in the fan-out tree, off the trainer's path. Engine syncers fetch the reference from their relay and read the bytes
themselves, so serving K engines costs a relay nothing per engine and the trainer's wait cannot grow with K."""

from __future__ import annotations

import ray

from slime_rl.run_keys import RunKeys

from .versions import Manifest, VersionStore

FETCH_TIMEOUT_S = 120.0  # reading a version's blob from the object store (the syncers use the same bound)


@ray.remote(num_cpus=0, max_concurrency=8)
class RelayWorker:
    def __init__(self, name: str, keep: int, redis_url: str, keys: RunKeys):
        from slime_rl.buffer import connect

        self.name = name
        self.weights_stream = keys.weights  # announcements of the versions this relay holds, for the syncers
        self.store = VersionStore(keep=keep)  # version -> (manifest, ObjectRef of the verified blob)
        self.children: list = []
        self.redis = connect(redis_url)  # rides out a Redis restart

    def set_children(self, children: list) -> None:
        self.children = children

    def put(self, manifest: Manifest, held: list) -> bool:
        """Store a version (verified) and start forwarding it; returns once this relay holds it.
        `held` is [ObjectRef of the blob]: wrapped in a list so that Ray passes the reference, not a copy."""
        (ref,) = held
        # old versions are refused unread; a blob that cannot be read within the deadline is a lost object
        if not self.store.offer(manifest, ray.get(ref, timeout=FETCH_TIMEOUT_S), keep_as=lambda _: ref):
            return False
        for child in self.children:
            child.put.remote(manifest, [ref])
        self.redis.xadd(self.weights_stream, {"version": manifest.version, "relay": self.name}, maxlen=1000)
        return True

    def newest(self) -> int:
        return self.store.newest

    def fetch(self, version: int) -> tuple[Manifest, list] | None:
        """(manifest, [ref]): the reference is wrapped so Ray passes it on instead of copying the blob out of us."""
        got = self.store.get(version)
        return None if got is None else (got[0], [got[1]])
