"""Start the relay tree and one syncer per engine; the orchestrator's single handle on weight distribution."""

from __future__ import annotations

import time

import ray

from slime_rl.buffer import connect, stream_tail
from slime_rl.config import RelayConfig
from slime_rl.run_keys import RunKeys

from .publisher import WeightPublisher
from .syncer import EngineSyncer
from .worker import RelayWorker

RELAY_CALL_S = 60.0  # a relay or syncer that does not answer a small call within this is stuck or dead


class RelayGroup:
    def __init__(self, cfg: RelayConfig, relays: list, syncers: dict[str, object]):
        self.cfg, self.relays, self.syncers = cfg, relays, syncers

    @classmethod
    def start(
        cls, cfg: RelayConfig, redis_url: str, engine_urls: list[str], run_dir: str | None = None, *, keys: RunKeys
    ) -> RelayGroup:
        # taken before any relay of this group exists: syncers hear every announcement of these relays and none
        # of the relays a resumed run had before (those are gone, with the versions they held)
        r = connect(redis_url)
        try:
            start_id = stream_tail(r, keys.weights)
        finally:
            r.close()
        relays = [RelayWorker.remote(f"relay-{i}", cfg.keep_versions, redis_url, keys) for i in range(cfg.num_relays)]
        for i, relay in enumerate(relays):  # tree: relay i feeds relays i*fanout+1 .. i*fanout+fanout
            kids = relays[i * cfg.fanout + 1 : (i + 1) * cfg.fanout + 1]
            ray.get(relay.set_children.remote(kids), timeout=RELAY_CALL_S)
        syncers = {}
        for j, url in enumerate(engine_urls):
            own = relays[j % len(relays)]
            order = [own] + [r for r in reversed(relays) if r is not own]  # own relay, then leaves up to the root
            syncers[url] = EngineSyncer.remote(
                url, order, redis_url, run_dir, transport=cfg.transport, keys=keys, start_id=start_id
            )
        return cls(cfg, relays, syncers)

    def publisher(self) -> WeightPublisher:
        return WeightPublisher(self.relays[0])

    def engine_versions(self) -> dict[str, int]:
        states = ray.get([s.state.remote() for s in self.syncers.values()], timeout=RELAY_CALL_S)
        return {st["engine"]: st["version"] for st in states}

    def wait_for_version(self, version: int, timeout: float = 600.0) -> dict[str, float]:
        started = time.monotonic()
        deadline = started + timeout
        seen: dict[str, float] = {}
        while len(seen) < len(self.syncers):
            for url, v in self.engine_versions().items():
                if v >= version and url not in seen:
                    seen[url] = time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"engines {sorted(set(self.syncers) - set(seen))} did not reach version {version}")
            time.sleep(0.05)
        return seen

    def stop(self) -> None:
        for s in self.syncers.values():
            try:
                ray.get(s.stop.remote(), timeout=5)
            except Exception:
                pass
            ray.kill(s)
        for r in self.relays:
            ray.kill(r)
