"""A producer's prompt progress stored in the buffer with its XADD (real redis-server with AOF)."""

from __future__ import annotations

import redis

from slime_rl.buffer import TrajectoryBuffer
from slime_rl.config import BufferConfig
from slime_rl.redis_server import EmbeddedRedis
from slime_rl.run_keys import RunKeys
from slime_rl.trajectory import Trajectory, TrajectoryGroup

KEYS = RunKeys("progress-run")


def group(tag: str) -> TrajectoryGroup:
    gid = f"g-{tag}"
    t = Trajectory(
        id=f"t-{tag}",
        group_id=gid,
        prompt_ids=[1],
        response_ids=[2],
        loss_mask=[1],
        rollout_logprobs=[-0.5],
        versions=[0],
    )
    return TrajectoryGroup(group_id=gid, trajectories=[t])


def test_progress_is_written_in_the_push_transaction_under_the_run_prefix(redis_url):
    buf = TrajectoryBuffer(BufferConfig(), redis_url, consumer="rollout-0", keys=KEYS)
    assert buf.progress("0") is None  # a fresh run: nothing to restore
    buf.put(group("a"))
    assert buf.progress("0") is None  # a put without progress leaves it alone
    buf.put(group("b"), progress=("0", "state-1"))
    buf.put_raw(group("c").to_bytes(), "g-c", progress=("1", "other"))
    ids = buf.put_many([group("d"), group("e")], progress=("0", "state-2"))
    assert len(ids) == 2 and all(isinstance(i, str) for i in ids)  # the entry ids, not the HSET reply
    assert buf.progress("0") == "state-2" and buf.progress("1") == "other"
    buf.save_progress("0", "state-3")  # moved on without a push (e.g. a stale group dropped)
    assert buf.progress("0") == "state-3" and buf.stats().produced == 5
    assert KEYS.prompt_progress in KEYS.all().values()
    assert redis.Redis.from_url(redis_url).hkeys(KEYS.prompt_progress) == [b"0", b"1"]
    assert not TrajectoryBuffer(BufferConfig(), redis_url, keys=RunKeys("another-run")).progress("0")


def test_progress_and_entries_survive_a_killed_redis_together(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        buf = TrajectoryBuffer(BufferConfig(), server.url, consumer="rollout-0", keys=KEYS)
        for i in range(3):
            buf.put(group(str(i)), progress=("0", f"state-{i}"))
        port = server.port
        server.kill()
        server = EmbeddedRedis(tmp_path / "redis", port=port).start()  # replays its AOF
        again = TrajectoryBuffer(BufferConfig(), server.url, consumer="rollout-0", keys=KEYS)
        assert again.progress("0") == "state-2" and again.stats().depth == 3
    finally:
        server.stop()
