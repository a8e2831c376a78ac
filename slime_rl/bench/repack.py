"""`slime-rl bench repack`: what dynamic repacking changes on a long-tail batch spread over two engines.

Two CPU engines serve the real model; one batch of requests with lognormal response lengths (p99 about 10x the
median, EOS ignored) goes through the router, with repacking off and on, alternating over rounds in one run. While
a batch runs, the router's in-flight counts are sampled every 10 ms:
- wall_s: time until the whole batch is done (repacking must not make the tail slower);
- engine_busy_s: engine-seconds with at least one request in flight (summed over both engines);
- freed_engine_s: engine-seconds, before the batch ends, with no request in flight, i.e. what the next batch could
  use; repacking's point is to raise it.
Both engines share this machine's cores, so a freed engine also speeds up the busy one a little."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from slime_rl.model_store import DEFAULT_OUT
from slime_rl.rollout.engine_launcher import launch_cpu_engine
from slime_rl.rollout.router import Router

from .engine import prompts, workload


async def one_batch(
    urls: list[str], batch: list[list[int]], lengths: list[int], repack_below: int, tag: str
) -> dict[str, Any]:
    router = Router(urls, repack_below=repack_below, repack_interval_s=0.05)
    router.start()
    busy = {u: 0.0 for u in urls}
    done = asyncio.Event()

    async def sample(period: float = 0.01) -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(period)
            now = time.perf_counter()
            for u in urls:
                busy[u] += (now - last) if router.inflight[u] else 0.0
            last = now

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    try:
        results = await asyncio.gather(
            *(
                router.generate(
                    f"{tag}-{i}", p, {"max_new_tokens": n, "temperature": 1.0, "ignore_eos": True}, rid=f"{tag}-{i}"
                )
                for i, (p, n) in enumerate(zip(batch, lengths))
            )
        )
        wall = time.perf_counter() - started
    finally:
        done.set()
        await sampler
        await router.close()
    tokens = sum(len(r.output_ids) for r in results)
    if tokens != sum(lengths):
        raise RuntimeError(f"repack bench: {tokens} tokens generated, {sum(lengths)} asked for")
    return {
        "wall_s": wall,
        "engine_busy_s": sum(busy.values()),
        "freed_engine_s": len(urls) * wall - sum(busy.values()),
        "repacked": router.repacked,
    }


def run(quick: bool = False, model_path: str | Path = DEFAULT_OUT) -> dict[str, Any]:
    n, median, rounds, repack_below = (8, 6, 1, 2) if quick else (16, 12, 3, 4)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    batch, lengths = prompts(tokenizer, n), workload(n, median)
    with tempfile.TemporaryDirectory() as tmp:
        engines = [
            launch_cpu_engine(model_path, max_batch_size=n, threads=1, log_path=Path(tmp) / f"engine{i}.log")
            for i in range(2)
        ]
        try:
            urls = [e.url for e in engines]
            asyncio.run(one_batch(urls, batch[:2], [2, 2], 0, "warm"))
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for r in range(rounds):  # alternate, so drift on a shared machine hits both alike
                for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    below = repack_below if mode == "on" else 0
                    runs[mode].append(asyncio.run(one_batch(urls, batch, lengths, below, f"{mode}{r}")))
        finally:
            for e in engines:
                e.stop()

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode])

    return {
        "requests": n,
        "median_len": sorted(lengths)[n // 2],
        "max_len": max(lengths),
        "engines": 2,
        "repack_below": repack_below,
        "rounds": rounds,
        "wall_s_off": med("off", "wall_s"),
        "wall_s_on": med("on", "wall_s"),
        "wall_ratio_on_vs_off": med("on", "wall_s") / med("off", "wall_s"),
        "freed_engine_s_off": med("off", "freed_engine_s"),
        "freed_engine_s_on": med("on", "freed_engine_s"),
        "engine_busy_s_off": med("off", "engine_busy_s"),
        "engine_busy_s_on": med("on", "engine_busy_s"),
        "repacked_requests": med("on", "repacked"),
        "runs": runs,
    }
