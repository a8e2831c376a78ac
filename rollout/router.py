"""Routes requests over several engines.

- Affinity: consistent hashing on the episode id, so every turn (and every resume) of an episode goes to the engine
  that holds its prefix in cache; adding or removing an engine moves only ~1/N of the keys.
- Load awareness: when the preferred engine has more than `slack` requests in flight above the least-loaded
  healthy engine, the request goes to the least-loaded one instead (losing a prefix hit beats queueing).
- Health: an engine that fails /health (checked every `health_interval_s` by `start()`, and right after a request
  to it fails) is taken out of the ring and put back as soon as it answers again. A request whose engine died is
  retried on the next healthy engine (the lost output was never seen, so nothing is re-tokenised).
- Aborts are sent to the engine that holds the request, by exact rid, which works with SGLang and the CPU engine.
- Dynamic repacking (`repack_below` > 0): when at most that many requests remain in flight but they are spread over
  several engines (the long tail of a batch), they are moved onto the engine that already holds the most of them:
  each is aborted where it runs and resumed there from its tokens (prompt + output so far, `max_new_tokens`
  reduced), inside `generate`, so callers see one uninterrupted result. The emptied engines take the next batch.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
from dataclasses import replace
from typing import Any

from .engine_client import EngineClient, EngineError, GenerateResult


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class Router:
    def __init__(
        self,
        urls: list[str],
        timeout: float = 600.0,
        replicas: int = 64,
        slack: int = 8,
        health_interval_s: float = 2.0,
        wait_healthy_s: float = 30.0,
        repack_below: int = 0,
        repack_interval_s: float = 0.25,
    ):
        if not urls:
            raise ValueError("router needs at least one engine URL")
        urls = [u.rstrip("/") for u in urls]
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate engine URLs: {urls}")
        self.clients = {u: EngineClient(u, timeout) for u in urls}
        self.healthy = set(urls)
        self.inflight = {u: 0 for u in urls}
        self.requests = {u: 0 for u in urls}
        self.slack = slack
        self.health_interval_s = health_interval_s
        self.wait_healthy_s = wait_healthy_s
        self._rids: dict[str, str] = {}  # rid in flight -> engine
        self._ring = sorted((_hash(f"{u}#{i}"), u) for u in urls for i in range(replicas))
        self._keys = [h for h, _ in self._ring]
        self._health_task: asyncio.Task | None = None
        self.repack_below, self.repack_interval_s = repack_below, repack_interval_s
        self._moving: dict[str, str] = {}  # rid being repacked -> the engine it resumes on
        self._cancelled: set[str] = set()  # rids the caller aborted while they were being moved
        self.repacked = 0
        self._repack_task: asyncio.Task | None = None

    # --- choosing an engine -------------------------------------------------------------------------
    def preferred(self, key: str) -> str:
        """The key's engine on the ring, skipping unhealthy ones (ignores load)."""
        if not self.healthy:
            raise EngineError(f"no healthy engine among {sorted(self.clients)}")
        i = bisect.bisect(self._keys, _hash(key))
        for j in range(len(self._ring)):
            url = self._ring[(i + j) % len(self._ring)][1]
            if url in self.healthy:
                return url
        raise AssertionError("unreachable: a healthy engine is on the ring")

    def pick(self, key: str) -> str:
        url = self.preferred(key)
        least = min(sorted(self.healthy), key=lambda u: self.inflight[u])
        return least if self.inflight[url] - self.inflight[least] > self.slack else url

    # --- requests -----------------------------------------------------------------------------------
    async def generate(
        self, key: str, input_ids: list[int], sampling_params: dict[str, Any], rid: str | None = None
    ) -> GenerateResult | list[GenerateResult]:
        try:
            res = await self._generate(key, input_ids, sampling_params, rid)
            while rid in self._moving and not isinstance(res, list):  # repacked: resume where it was sent
                target = self._moving.pop(rid)
                budget = int(sampling_params.get("max_new_tokens", 128)) - len(res.output_ids)
                if res.finish_reason != "abort" or rid in self._cancelled or budget <= 0:
                    break  # it finished before the abort landed, or the caller cut it off itself
                more = await self._generate(
                    key, input_ids + res.output_ids, {**sampling_params, "max_new_tokens": budget}, rid, engine=target
                )
                res = replace(
                    more,
                    output_ids=res.output_ids + more.output_ids,
                    text=res.text + more.text,
                    logprobs=res.logprobs + more.logprobs,
                    versions=res.versions + more.versions,
                )
            return res
        finally:
            if rid is not None:
                self._moving.pop(rid, None)
                self._cancelled.discard(rid)

    async def _generate(
        self,
        key: str,
        input_ids: list[int],
        sampling_params: dict[str, Any],
        rid: str | None,
        engine: str | None = None,
    ) -> GenerateResult | list[GenerateResult]:
        last: EngineError | None = None
        for _ in range(len(self.clients)):
            if not self.healthy:  # all down, e.g. restarting: wait a little for one to come back
                await self.wait_healthy(self.wait_healthy_s)
            url = engine if engine in self.healthy else self.pick(key)
            engine = None  # a retry after a failure goes wherever the ring says
            self.inflight[url] += 1
            self.requests[url] += 1
            if rid:
                self._rids[rid] = url
            try:
                return await self.clients[url].generate(input_ids, sampling_params, rid)
            except EngineError as exc:
                if await self.clients[url].health():
                    raise  # the engine is up and refused this request: retrying elsewhere would not help
                self.healthy.discard(url)
                last = exc
            finally:
                self.inflight[url] -= 1
                if rid:
                    self._rids.pop(rid, None)
        raise last or EngineError("no healthy engine")

    async def abort(self, rid: str) -> None:
        """Abort one request (exact rid) on the engine that holds it; a no-op if it already finished."""
        if rid in self._moving:
            self._cancelled.add(rid)  # do not resume it elsewhere
        url = self._rids.get(rid)
        if url is not None:
            try:
                await self.clients[url].abort(rid)
            except EngineError:
                pass  # the engine went away: the request is gone with it

    async def abort_prefix(self, prefix: str) -> int:
        """Abort every request in flight whose rid starts with `prefix` (e.g. all samples of a group)."""
        rids = [r for r in self._rids if r.startswith(prefix)]
        await asyncio.gather(*(self.abort(r) for r in rids))
        return len(rids)

    # --- dynamic repacking ---------------------------------------------------------------------------
    async def repack(self) -> int:
        """Move a few stragglers spread over several engines onto the one holding most of them; returns how many
        requests were moved."""
        busy = {u: n for u, n in self.inflight.items() if n > 0 and u in self.healthy}
        total = sum(busy.values())
        if len(busy) < 2 or total > self.repack_below or self._moving:
            return 0
        target = max(sorted(busy), key=lambda u: busy[u])
        movers = [r for r, u in self._rids.items() if u != target]
        for r in movers:
            self._moving[r] = target
        await asyncio.gather(
            *(self.clients[self._rids[r]].abort(r) for r in movers if r in self._rids), return_exceptions=True
        )
        self.repacked += len(movers)
        return len(movers)

    async def _repack_loop(self) -> None:
        while True:
            await asyncio.sleep(self.repack_interval_s)
            await self.repack()

    # --- health -------------------------------------------------------------------------------------
    async def check_health(self) -> set[str]:
        results = await asyncio.gather(*(c.health() for c in self.clients.values()))
        self.healthy = {u for u, ok in zip(self.clients, results) if ok}
        return self.healthy

    async def wait_healthy(self, timeout: float) -> set[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.check_health() and loop.time() < deadline:
            await asyncio.sleep(min(0.5, self.health_interval_s))
        return self.healthy

    async def _health_loop(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(self.health_interval_s)

    def start(self) -> None:
        """Check health in the background (on the running event loop) until `close`."""
        loop = asyncio.get_running_loop()
        if self._health_task is None or self._health_task.done():
            self._health_task = loop.create_task(self._health_loop())
        if self.repack_below and len(self.clients) > 1 and (self._repack_task is None or self._repack_task.done()):
            self._repack_task = loop.create_task(self._repack_loop())

    def load(self) -> dict[str, dict[str, Any]]:
        return {
            u: {"healthy": u in self.healthy, "inflight": self.inflight[u], "requests": self.requests[u]}
            for u in self.clients
        }

    async def close(self) -> None:
        for task in (self._health_task, self._repack_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._health_task = self._repack_task = None
        await asyncio.gather(*(c.close() for c in self.clients.values()))
