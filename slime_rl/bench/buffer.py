"""`slime-rl bench buffer`: the trajectory buffer's throughput against plain pipelined redis-py on the same
payload (a ~2,000-token trajectory with logprobs), both on one fresh embedded redis-server, in one run."""

from __future__ import annotations

import tempfile
import time

import numpy as np

from ..buffer import TrajectoryBuffer
from ..config import BufferConfig
from ..redis_server import EmbeddedRedis
from ..run_keys import RunKeys
from ..trajectory import Trajectory, TrajectoryGroup

TOKENS = 2000
BATCH = 32


def _group(i: int, rng: np.random.Generator) -> TrajectoryGroup:
    gid = f"bench-{i}"
    traj = Trajectory(
        id=f"{gid}-0",
        group_id=gid,
        prompt_ids=rng.integers(0, 49152, 64).tolist(),
        response_ids=rng.integers(0, 49152, TOKENS).tolist(),
        loss_mask=[1] * TOKENS,
        rollout_logprobs=(-rng.random(TOKENS)).tolist(),
        versions=[0] * TOKENS,
        reward=1.0,
    )
    return TrajectoryGroup(group_id=gid, trajectories=[traj])


def _ours(url: str, groups: list[TrajectoryGroup]) -> tuple[float, int]:
    cfg, keys = BufferConfig(high_water=10 * BATCH), RunKeys("bench-ours")
    producer = TrajectoryBuffer(cfg, url, consumer="producer", keys=keys)
    consumer = TrajectoryBuffer(cfg, url, consumer="consumer", keys=keys)
    trained: set[str] = set()
    start = time.perf_counter()
    for i in range(0, len(groups), BATCH):
        producer.put_many(groups[i : i + BATCH])
        got = consumer.read(BATCH, block_ms=1000)
        consumer.ack(got)
        trained.update(t.id for e in got for t in e.group.trajectories)
    while len(trained) < len(groups):  # drain anything a batch boundary left behind
        got = consumer.read(BATCH, block_ms=200)
        if not got:
            break
        consumer.ack(got)
        trained.update(t.id for e in got for t in e.group.trajectories)
    elapsed = time.perf_counter() - start
    return elapsed, len(groups) - len(trained)


def _raw(url: str, payloads: list[bytes]) -> float:
    import redis

    r = redis.Redis.from_url(url)
    stream, group = "bench:raw", "g"
    r.xgroup_create(stream, group, id="0", mkstream=True)
    start = time.perf_counter()
    for i in range(0, len(payloads), BATCH):
        pipe = r.pipeline(transaction=False)
        for p in payloads[i : i + BATCH]:
            pipe.xadd(stream, {"data": p})
        pipe.execute()
        got = r.xreadgroup(group, "c", {stream: ">"}, count=BATCH)
        ids = [eid for eid, _ in got[0][1]]
        r.xack(stream, group, *ids)
    return time.perf_counter() - start


def run(quick: bool = False) -> dict:
    n = 128 if quick else 1024
    rng = np.random.default_rng(0)
    groups = [_group(i, rng) for i in range(n)]
    payloads = [g.to_bytes() for g in groups]
    mb = sum(len(p) for p in payloads) / 1e6
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as server:
        raw_s = _raw(server.url, payloads)
        ours_s, lost = _ours(server.url, groups)
    return {
        "trajectories": n,
        "tokens_per_trajectory": TOKENS,
        "payload_bytes": len(payloads[0]),
        "batch": BATCH,
        "traj_per_s": n / ours_s,
        "mb_per_s": mb / ours_s,
        "raw_per_s": n / raw_s,
        "ratio": raw_s / ours_s,
        "lost": lost,
        "note": "ours includes msgpack encode/decode, schema validation, dedupe check, and transactional ack",
    }
