"""One syncer per engine: hears of new versions on the Redis stream, pulls the newest complete one from its relay
(or another relay if that one is dead or behind), checks it, and hands it to the engine, which swaps it in
between decode steps. Only newer versions are ever pushed."""

from __future__ import annotations

import threading
import time

import httpx
import ray

from slime_rl.metrics import MetricsSink
from slime_rl.run_keys import RunKeys

from .delivery import deliver
from .versions import IntegrityError, verify
from .worker import FETCH_TIMEOUT_S


@ray.remote(num_cpus=0, max_concurrency=4)
class EngineSyncer:
    def __init__(
        self,
        engine_url: str,
        relays: list,
        redis_url: str,
        run_dir: str | None = None,
        wait_for_relay_s: float = 30.0,
        transport: str = "auto",
        *,
        keys: RunKeys,
        start_id: str = "0-0",
    ):
        """`start_id`: read the run's weights stream after this entry; announcements up to it were made by
        relays of an earlier start of the run (before a resume), which no longer hold those versions."""
        from slime_rl.buffer import connect

        self.engine_url = engine_url.rstrip("/")
        self.relays = relays  # preferred first
        self.redis = connect(redis_url)  # rides out a Redis restart
        self.metrics = MetricsSink(f"syncer-{engine_url}", redis_url, run_dir, keys=keys)
        self.weights_stream, self.start_id = keys.weights, start_id
        self.wait_for_relay_s = wait_for_relay_s
        self.transport = transport
        # one client for the syncer's life: a bare httpx.get builds a TLS context per call, ~33 ms of CPU
        # (measured), and the loop asks the engine its version every half second
        self.http = httpx.Client(timeout=5)
        self.version = self._engine_version()
        self.last_sync_s = 0.0
        self.rejected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def state(self) -> dict:
        return {
            "engine": self.engine_url,
            "version": self.version,
            "last_sync_s": self.last_sync_s,
            "rejected": self.rejected,
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)  # the loop wakes every half second and closes its client on the way out

    def _engine_version(self) -> int:
        try:
            return int(self.http.get(f"{self.engine_url}/get_weight_version").json()["weight_version"])
        except (httpx.HTTPError, ValueError, KeyError):
            return -1

    def _loop(self) -> None:
        last_id = self.start_id
        while not self._stop.is_set():
            try:
                got = self.redis.xread({self.weights_stream: last_id}, block=500, count=100)
            except Exception:
                time.sleep(0.5)
                continue
            newest = -1
            for _, entries in got or []:
                for eid, fields in entries:
                    last_id = eid
                    newest = max(newest, int(fields[b"version"]))
            if newest > self.version or (newest == -1 and self._engine_version() < self.version):
                self._sync(max(newest, self.version))
        self.http.close()  # here, not in stop(): the loop may be mid-request when stop() is called

    def _sync(self, version: int) -> None:
        started = time.time()
        for manifest, blob in self._candidates(version):
            try:
                verify(manifest, blob)
            except IntegrityError as exc:
                self.rejected += 1
                self.metrics.log("relay", {"engine": self.engine_url, "rejected": str(exc)})
                continue
            ok = deliver(self.engine_url, blob, manifest.version, self.transport, http=self.http)
            if ok:
                self.version = manifest.version
                self.last_sync_s = time.time() - started
                self.metrics.log(
                    "relay",
                    {
                        "version": self.version,
                        "engine_versions": {self.engine_url: self.version},
                        "sync_s": {self.engine_url: self.last_sync_s},
                    },
                )
                return

    def _candidates(self, version: int):
        """(manifest, blob) for the newest version available >= `version`, preferred relay first, then others."""
        deadline = time.monotonic() + self.wait_for_relay_s
        while time.monotonic() < deadline and not self._stop.is_set():
            for relay in self.relays:
                try:
                    newest = ray.get(relay.newest.remote(), timeout=10)
                    if newest >= version:
                        got = ray.get(relay.fetch.remote(newest), timeout=FETCH_TIMEOUT_S)
                        if got is not None:
                            manifest, (ref,) = got
                            yield manifest, ray.get(ref, timeout=FETCH_TIMEOUT_S)
                except ray.exceptions.RayError:
                    continue  # that relay (or the copy it owns) is gone or stuck: try the next one
            time.sleep(0.1)
