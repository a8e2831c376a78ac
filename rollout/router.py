"""Routes requests over several engines: consistent hashing on the episode id (a multi-turn episode keeps hitting
the engine that holds its prefix), load-aware (falls back to the least-loaded engine when the preferred one is
busier than the rest by `slack` requests), health-checked (an engine failing /health is taken out, and put back
when it answers again)."""
from __future__ import annotations

import asyncio
import bisect
import hashlib
from typing import Any

from .engine_client import EngineClient, EngineError, GenerateResult


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class Router:
    def __init__(self, urls: list[str], timeout: float = 600.0, replicas: int = 64, slack: int = 8):
        if not urls:
            raise ValueError("router needs at least one engine URL")
        self.clients = {u: EngineClient(u, timeout) for u in urls}
        self.healthy = set(urls)
        self.inflight = {u: 0 for u in urls}
        self.slack = slack
        self._ring = sorted((_hash(f"{u}#{i}"), u) for u in urls for i in range(replicas))
        self._keys = [h for h, _ in self._ring]

    def pick(self, key: str) -> str:
        if not self.healthy:
            raise EngineError("no healthy engine")
        i = bisect.bisect(self._keys, _hash(key)) % len(self._ring)
        for j in range(len(self._ring)):  # walk the ring to the first healthy engine
            url = self._ring[(i + j) % len(self._ring)][1]
            if url in self.healthy:
                break
        least = min(self.healthy, key=lambda u: self.inflight[u])
        return least if self.inflight[url] - self.inflight[least] > self.slack else url

    async def generate(self, key: str, input_ids: list[int], sampling_params: dict[str, Any],
                       rid: str | None = None) -> GenerateResult | list[GenerateResult]:
        url = self.pick(key)
        self.inflight[url] += 1
        try:
            return await self.clients[url].generate(input_ids, sampling_params, rid)
        except EngineError:
            if not await self.clients[url].health():
                self.healthy.discard(url)
            raise
        finally:
            self.inflight[url] -= 1

    async def abort(self, rid: str) -> None:
        await asyncio.gather(*(self.clients[u].abort(rid) for u in self.healthy), return_exceptions=True)

    async def check_health(self) -> set[str]:
        results = await asyncio.gather(*(c.health() for c in self.clients.values()))
        self.healthy = {u for u, ok in zip(self.clients, results) if ok}
        return self.healthy

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()))
