"""Router: rollout-id affinity, load awareness, health removal/return, retry off a dead engine, exact aborts.
Against a real CPU engine (tiny model) and small real HTTP servers that answer /health."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slime_rl.net import free_port
from slime_rl.rollout.engine_client import EngineError
from slime_rl.rollout.router import Router


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class HealthServer:
    """A real HTTP server on a fixed port that can be stopped and started again at the same address."""

    def __init__(self, port: int):
        self.port, self.url, self.server = port, f"http://127.0.0.1:{port}", None

    def start(self) -> HealthServer:
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _Health)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def side_server():
    s = HealthServer(free_port()).start()
    yield s
    s.stop()


def keys_for(router: Router, url: str, n: int = 3) -> list[str]:
    return [k for k in (f"episode-{i}" for i in range(500)) if router.preferred(k) == url][:n]


def test_affinity_is_stable_and_spreads_over_engines(tiny_engine, side_server):
    router = Router([tiny_engine.url, side_server.url])
    picks = {f"episode-{i}": router.pick(f"episode-{i}") for i in range(200)}
    share = sum(u == tiny_engine.url for u in picks.values()) / len(picks)
    assert 0.25 < share < 0.75  # both engines get keys
    assert all(router.pick(k) == u for k, u in picks.items())  # the same episode keeps its engine
    # consistent hashing: a third engine takes keys only for itself, nobody else's keys move
    third = Router([tiny_engine.url, side_server.url, "http://127.0.0.1:9"])
    moved = {k for k, u in picks.items() if third.pick(k) != u}
    assert moved and all(third.pick(k) == "http://127.0.0.1:9" for k in moved) and len(moved) < 150


def test_load_awareness_moves_requests_off_a_busy_engine(tiny_engine, side_server):
    router = Router([tiny_engine.url, side_server.url], slack=4)
    key = keys_for(router, side_server.url, 1)[0]
    router.inflight[side_server.url] = 4
    assert router.pick(key) == side_server.url  # within the slack: affinity wins
    router.inflight[side_server.url] = 5
    assert router.pick(key) == tiny_engine.url  # busier than the rest by more than the slack


def test_unhealthy_engine_is_taken_out_and_put_back(tiny_engine):
    side = HealthServer(free_port()).start()

    async def scenario() -> None:
        router = Router([tiny_engine.url, side.url], health_interval_s=0.1)
        router.start()
        try:
            await asyncio.sleep(0.3)
            assert router.healthy == {tiny_engine.url, side.url}
            side.stop()
            await _until(lambda: router.healthy == {tiny_engine.url})
            assert all(router.pick(k) == tiny_engine.url for k in keys_for(router, tiny_engine.url) + ["x", "y"])
            side.start()  # same address: the engine came back
            await _until(lambda: router.healthy == {tiny_engine.url, side.url})
        finally:
            await router.close()

    try:
        asyncio.run(scenario())
    finally:
        side.stop()


def test_request_to_a_dead_engine_is_retried_on_a_healthy_one(tiny_engine):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def scenario():
        router = Router([tiny_engine.url, dead])
        key = keys_for(router, dead, 1)[0]
        res = await router.generate(key, [1, 2, 3], {"max_new_tokens": 3, "temperature": 0.0}, rid="r-1")
        assert res.engine == tiny_engine.url and len(res.output_ids) == 3
        assert router.healthy == {tiny_engine.url} and router.inflight == {tiny_engine.url: 0, dead: 0}
        bad = Router([dead], wait_healthy_s=0.2)
        with pytest.raises(EngineError):
            await bad.generate("k", [1, 2], {"max_new_tokens": 2})
        await router.close()

    asyncio.run(scenario())


def test_abort_prefix_cuts_a_group_on_its_engine(tiny_engine):
    async def scenario():
        router = Router([tiny_engine.url])
        params = {"max_new_tokens": 1000, "temperature": 1.0, "ignore_eos": True}
        jobs = [
            asyncio.create_task(router.generate(f"grp-{i}", [1, 2, 3], params, rid=f"grp-{i}-t0-1")) for i in range(2)
        ]
        other = asyncio.create_task(router.generate("keep", [1, 2], {"max_new_tokens": 5}, rid="keep-t0-1"))
        await _until(lambda: sum(r.startswith("grp-") for r in router._rids) == 2)
        await asyncio.sleep(0.3)
        assert await router.abort_prefix("grp-") == 2
        results = await asyncio.gather(*jobs)
        assert all(r.finish_reason == "abort" and len(r.output_ids) < 1000 for r in results)
        assert (await other).finish_reason != "abort"
        await router.close()

    asyncio.run(scenario())


async def _until(cond, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
def second_engine(tiny_model_path, tmp_path):
    from slime_rl.rollout.engine_launcher import launch_cpu_engine

    engine = launch_cpu_engine(tiny_model_path, max_batch_size=16, threads=1, log_path=tmp_path / "engine2.log")
    yield engine
    engine.stop()


def test_repacking_moves_stragglers_onto_one_engine_and_changes_no_token(tiny_engine, second_engine):
    greedy = {"max_new_tokens": 600, "temperature": 0.0, "ignore_eos": True}
    prompts = {"a": [5, 17, 300, 41], "b": [7, 8, 9, 10, 11]}

    async def scenario():
        alone = Router([tiny_engine.url])  # reference: each request generated on one engine, never moved
        reference = {k: await alone.generate(k, p, greedy, rid=f"ref-{k}") for k, p in prompts.items()}
        await alone.close()
        router = Router([tiny_engine.url, second_engine.url], repack_below=2, repack_interval_s=0.05)
        keys = [keys_for(router, tiny_engine.url, 1)[0], keys_for(router, second_engine.url, 1)[0]]
        router.start()
        try:
            results = await asyncio.gather(
                *(router.generate(key, p, greedy, rid=f"{key}-t0") for key, p in zip(keys, prompts.values()))
            )
        finally:
            await router.close()
        return reference, results, router

    reference, results, router = asyncio.run(scenario())
    assert router.repacked == 1  # two stragglers on two engines: one moved, once
    assert len({r.engine for r in results}) == 1  # both finished on the same engine
    for ref, res in zip(reference.values(), results):
        assert res.finish_reason == "length" and len(res.output_ids) == 600
        assert res.output_ids == ref.output_ids  # resumed from its tokens: greedy output unchanged
        assert max(abs(a - b) for a, b in zip(res.logprobs, ref.logprobs)) < 1e-3
    assert router.inflight == {tiny_engine.url: 0, second_engine.url: 0} and not router._moving


def test_no_repacking_while_many_requests_are_in_flight(tiny_engine, second_engine):
    router = Router([tiny_engine.url, second_engine.url], repack_below=2)
    router.inflight = {tiny_engine.url: 2, second_engine.url: 1}
    router._rids = {"x": tiny_engine.url, "y": tiny_engine.url, "z": second_engine.url}
    assert asyncio.run(router.repack()) == 0 and not router._moving
    router.inflight = {tiny_engine.url: 2, second_engine.url: 0}
    assert asyncio.run(router.repack()) == 0  # all on one engine already
