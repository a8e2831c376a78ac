"""The Redis trajectory buffer against a real redis-server: exactly-once, reclaim, durability, dead letters,
backpressure. Producers and consumers run in separate processes where the property is about processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import msgpack
import pytest
import redis

from slime_rl.buffer import BufferFullError, TrajectoryBuffer
from slime_rl.config import BufferConfig
from slime_rl.redis_server import EmbeddedRedis
from slime_rl.run_keys import RunKeys
from slime_rl.trajectory import Trajectory, TrajectoryGroup

CTX = mp.get_context("fork")
TRAINED = "test:trained"
KEYS = RunKeys("test-run")


def make_group(tag: str, n: int = 2, tokens: int = 8) -> TrajectoryGroup:
    gid = f"g-{tag}"
    trajs = [
        Trajectory(
            id=f"t-{tag}-{i}",
            group_id=gid,
            prompt_ids=[1, 2],
            response_ids=[3] * tokens,
            loss_mask=[1] * tokens,
            rollout_logprobs=[-0.5] * tokens,
            versions=[0] * tokens,
            reward=float(i),
        )
        for i in range(n)
    ]
    return TrajectoryGroup(group_id=gid, trajectories=trajs)


def produce(url: str, cfg: BufferConfig, prefix: str, count: int) -> None:
    buf = TrajectoryBuffer(cfg, url, consumer=f"producer-{prefix}", keys=KEYS)
    for i in range(count):
        buf.put(make_group(f"{prefix}-{i}"))


def consume(url: str, cfg: BufferConfig, name: str, stop_after: int, deadline_s: float = 60.0) -> None:
    """Read, 'train', ack, and record what was trained; exits once the shared counter reaches stop_after."""
    buf = TrajectoryBuffer(cfg, url, consumer=name, keys=KEYS)
    r = redis.Redis.from_url(url)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and r.llen(TRAINED) < stop_after:
        entries = buf.read(count=3, block_ms=200)
        if not entries:
            continue
        buf.ack(entries)  # the optimizer step "committed"
        ids = [t.id for e in entries for t in e.group.trajectories]
        r.rpush(TRAINED, *ids)


def read_then_hang(url: str, cfg: BufferConfig, name: str, ready) -> None:
    buf = TrajectoryBuffer(cfg, url, consumer=name, keys=KEYS)
    got = []
    while not got:
        got = buf.read(count=4, block_ms=500)
    ready.set()
    time.sleep(3600)  # "training" forever; the test kills us before any ack


def test_many_producers_many_consumers_each_trajectory_trained_once(redis_url):
    cfg = BufferConfig(high_water=8, claim_idle_ms=60000)
    producers = [CTX.Process(target=produce, args=(redis_url, cfg, f"p{i}", 15)) for i in range(3)]
    total = 3 * 15 * 2
    consumers = [CTX.Process(target=consume, args=(redis_url, cfg, f"c{i}", total)) for i in range(2)]
    for p in producers + consumers:
        p.start()
    for p in producers + consumers:
        p.join(90)
        assert p.exitcode == 0
    trained = [x.decode() for x in redis.Redis.from_url(redis_url).lrange(TRAINED, 0, -1)]
    expected = {f"t-p{p}-{g}-{i}" for p in range(3) for g in range(15) for i in range(2)}
    assert sorted(trained) == sorted(expected)  # every id, exactly once
    stats = TrajectoryBuffer(cfg, redis_url, consumer="observer", keys=KEYS).stats()
    assert (stats.produced, stats.consumed, stats.depth, stats.pending) == (45, 45, 0, 0)


def test_killed_consumer_entries_are_reclaimed_and_trained_once(redis_url):
    cfg = BufferConfig(claim_idle_ms=300)
    producer = TrajectoryBuffer(cfg, redis_url, consumer="producer", keys=KEYS)
    for i in range(6):
        producer.put(make_group(str(i)))
    ready = CTX.Event()
    victim = CTX.Process(target=read_then_hang, args=(redis_url, cfg, "victim", ready))
    victim.start()
    assert ready.wait(30)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    assert producer.stats().pending == 4  # the dead consumer's batch is still pending, not lost
    consume(redis_url, cfg, "rescuer", stop_after=12, deadline_s=30)
    trained = [x.decode() for x in redis.Redis.from_url(redis_url).lrange(TRAINED, 0, -1)]
    assert sorted(trained) == sorted(f"t-{g}-{i}" for g in range(6) for i in range(2))
    assert producer.stats().pending == 0


def test_a_consumer_does_not_reclaim_what_it_holds_uncommitted(redis_url):
    # a trainer keeps its entries unacknowledged until the checkpoint that commits them, often longer than the
    # claim idle time; XAUTOCLAIM would hand them back to it, to be trained again
    cfg = BufferConfig(claim_idle_ms=100)
    buf = TrajectoryBuffer(cfg, redis_url, consumer="trainer", keys=KEYS)
    buf.put_many([make_group("held"), make_group("next")])
    held = buf.read(1, block_ms=100)
    assert [e.group.group_id for e in held] == ["g-held"]
    time.sleep(0.3)  # longer than claim_idle_ms: "held" is idle in this consumer's pending list
    again = buf.read(5, block_ms=100)
    assert [e.group.group_id for e in again] == ["g-next"]
    buf.ack(held + again)
    assert buf.stats().pending == 0 and buf.stats().duplicates == 0
    rescuer = TrajectoryBuffer(cfg, redis_url, consumer="rescuer", keys=KEYS)  # a dead consumer's entries still move on
    buf.put(make_group("orphan"))
    orphan = buf.read(1, block_ms=100)
    time.sleep(0.3)
    assert [e.entry_id for e in rescuer.read(5, block_ms=100)] == [orphan[0].entry_id]


def test_redelivered_trajectories_are_not_trained_twice(redis_url):
    cfg = BufferConfig()
    buf = TrajectoryBuffer(cfg, redis_url, consumer="c", keys=KEYS)
    group = make_group("dup")
    buf.put(group)
    buf.ack(buf.read(1, block_ms=100))
    buf.put(group)  # e.g. a producer retried an XADD whose reply it never saw
    assert buf.read(1, block_ms=100) == []
    stats = buf.stats()
    assert stats.duplicates == 1 and stats.consumed == 1 and stats.depth == 0


def test_redis_killed_and_restarted_on_same_aof_loses_nothing_produced(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    cfg = BufferConfig()
    try:
        buf = TrajectoryBuffer(cfg, server.url, consumer="c", keys=KEYS)
        for i in range(50):
            buf.put(make_group(str(i)))
        first = buf.read(5, block_ms=100)
        buf.ack(first)
        server.kill()  # SIGKILL: no graceful AOF rewrite
        server = EmbeddedRedis(tmp_path / "redis", port=server.port).start()
        # the same client object reconnects by itself
        rest = []
        while len(rest) < 45:
            got = buf.read(10, block_ms=200)
            assert got, "entries produced before the crash are missing"
            rest += got
        ids = {e.group.group_id for e in first + rest}
        assert ids == {f"g-{i}" for i in range(50)}
        assert buf.is_trained("t-0-0") and not buf.is_trained("t-49-0")
    finally:
        server.stop()


def test_malformed_entries_go_to_dead_letters_and_consumer_continues(redis_url):
    cfg = BufferConfig(max_entry_bytes=4096)
    buf = TrajectoryBuffer(cfg, redis_url, consumer="c", keys=KEYS)
    good = make_group("ok")
    wrong_type = make_group("wt").trajectories[0].to_wire()
    wrong_type["reward"] = "lots"
    missing = make_group("mf").trajectories[0].to_wire()
    del missing["prompt_ids"]
    raw = good.to_bytes()
    buf.put_raw(msgpack.packb({"v": 1, "group_id": "g-wt", "trajectories": [wrong_type]}))
    buf.put_raw(msgpack.packb({"v": 1, "group_id": "g-mf", "trajectories": [missing]}))
    buf.put_raw(raw[: len(raw) // 3])
    buf.put_raw(make_group("big", tokens=2000).to_bytes())
    buf.put(good)
    got = []
    for _ in range(5):
        got += buf.read(5, block_ms=100)
    assert [e.group.group_id for e in got] == ["g-ok"]
    reasons = [d["reason"] for d in buf.dead_letters()]
    assert len(reasons) == 4
    assert "reward" in reasons[0]
    assert "prompt_ids: missing" in reasons[1]
    assert "undecodable" in reasons[2]
    assert "exceeds the limit" in reasons[3]
    assert buf.stats().dead_lettered == 4


def test_backpressure_blocks_producers_until_trainer_drains(redis_url):
    cfg = BufferConfig(high_water=3, put_timeout_s=30)
    buf = TrajectoryBuffer(cfg, redis_url, consumer="c", keys=KEYS)
    for i in range(3):
        buf.put(make_group(str(i)))
    done = threading.Event()

    def late_put():
        TrajectoryBuffer(cfg, redis_url, consumer="p2", keys=KEYS).put(make_group("late"))
        done.set()

    thread = threading.Thread(target=late_put)
    thread.start()
    assert not done.wait(0.5)  # blocked at the high-water mark
    assert buf.stats().depth == 3
    buf.ack(buf.read(1, block_ms=100))  # the trainer drains one
    assert done.wait(10)
    thread.join()
    assert buf.stats().depth == 3


def test_backpressure_times_out_with_a_clear_error(redis_url):
    cfg = BufferConfig(high_water=1)
    buf = TrajectoryBuffer(cfg, redis_url, consumer="c", keys=KEYS)
    buf.put(make_group("a"))
    with pytest.raises(BufferFullError, match="high-water mark"):
        buf.put(make_group("b"), timeout=0.3)


def test_restarted_consumer_rereads_its_pending_entries_once_each(redis_url):
    cfg = BufferConfig()
    producer = TrajectoryBuffer(cfg, redis_url, consumer="producer", keys=KEYS)
    for i in range(5):
        producer.put(make_group(str(i)))
    first = TrajectoryBuffer(cfg, redis_url, consumer="trainer-0", keys=KEYS)
    assert len(first.read(5, block_ms=100)) == 5  # delivered, never acknowledged (the process "died")
    again = TrajectoryBuffer(cfg, redis_url, consumer="trainer-0", keys=KEYS)  # same name after a restart
    seen = []
    for _ in range(6):
        seen += [e.group.group_id for e in again.read(2, block_ms=50)]
    assert sorted(seen) == sorted(f"g-{i}" for i in range(5))  # each once, though none is acknowledged yet
