"""Benchmark: rollout throughput through worker + environment + buffer vs the raw engine, same run.

One CPU engine serving the real model, one embedded redis-server. Each round generates the same groups twice:
  worker: RolloutWorkerCore.generate_groups (chat template, env reward, Trajectory, msgpack, XADD, metrics)
  raw:    the same prompt token ids x group_size, sent with EngineClient.generate at the same concurrency
Greedy decoding, so both produce the very same tokens and the ratio measures overhead, not sampling luck.
Rounds alternate (raw, worker, worker, raw, ...) so slow drift of a shared machine hits both equally; the
reported ratio is the median of the per-round ratios (tokens/s are over all rounds).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from slime_rl.config import load_config
from slime_rl.model_store import DEFAULT_OUT
from slime_rl.redis_server import EmbeddedRedis
from slime_rl.rollout.engine_client import EngineClient
from slime_rl.rollout.engine_launcher import launch_cpu_engine
from slime_rl.rollout.episode import encode_chat
from slime_rl.rollout.progress import PromptProgress
from slime_rl.rollout.worker import RolloutWorkerCore


async def _raw(client: EngineClient, prompts: list[list[int]], params: dict[str, Any]) -> int:
    results = await asyncio.gather(*(client.generate(p, params, rid=f"raw-{i}") for i, p in enumerate(prompts)))
    return sum(len(r.output_ids) for r in results)


def run(quick: bool = False, model_path: str | Path = DEFAULT_OUT) -> dict[str, Any]:
    groups, group_size, max_new = (2, 4, 12) if quick else (4, 8, 32)
    rounds = 1 if quick else 6
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        engine = launch_cpu_engine(
            model_path, max_batch_size=groups * group_size, threads=2, log_path=Path(tmp) / "engine.log"
        )
        try:
            cfg = load_config(
                None,
                [
                    f"model.path={model_path}",
                    f"rollout.group_size={group_size}",
                    f"rollout.concurrency={groups * group_size}",
                    "rollout.shuffle=false",
                    f"rollout.sampling.max_new_tokens={max_new}",
                    "rollout.sampling.temperature=0",
                    "rollout.trajectory_log_every=1000000",
                ],
            )
            worker = RolloutWorkerCore(cfg, [engine.url], redis.url, 0, run_dir=tmp)
            rows = [worker.dataset.rows[i] for i in range(groups)]
            env = worker.envs.new_episode()
            prompts = [encode_chat(worker.tokenizer, env.prompt(r)) for r in rows for _ in range(group_size)]
            params = worker.runner.sampling_params(max_new, greedy=True)
            client = EngineClient(engine.url)
            # warm-up: first-request and first-push costs (connections, thread pool, template) out of the timing
            asyncio.run(_raw(client, prompts[:2], params))
            asyncio.run(worker.generate_groups(1))
            timings: dict[str, list[float]] = {"worker": [0.0, 0], "raw": [0.0, 0]}
            cpu = {"worker": 0.0, "raw": 0.0}  # this process's CPU time: the client-side cost, free of noise
            pair_ratios = []

            def timed(kind: str) -> float:
                started, cpu_started = time.perf_counter(), time.process_time()
                if kind == "raw":
                    tokens = asyncio.run(_raw(client, prompts, params))
                else:
                    worker.progress, before = PromptProgress(), worker.tokens  # the same prompts every round
                    asyncio.run(worker.generate_groups(groups))
                    tokens = worker.tokens - before
                elapsed = time.perf_counter() - started
                cpu[kind] += time.process_time() - cpu_started
                timings[kind][0] += elapsed
                timings[kind][1] += tokens
                return tokens / elapsed

            for r in range(rounds):
                tps = {kind: timed(kind) for kind in (("raw", "worker") if r % 2 == 0 else ("worker", "raw"))}
                pair_ratios.append(tps["worker"] / tps["raw"])
        finally:
            engine.stop()
    worker_tps = timings["worker"][1] / timings["worker"][0]
    raw_tps = timings["raw"][1] / timings["raw"][0]
    # the ratio is the median over back-to-back pairs: robust to a busy shared machine slowing one round
    return {
        "tokens_per_s": worker_tps,
        "raw_engine_tokens_per_s": raw_tps,
        "ratio_vs_raw_engine": statistics.median(pair_ratios),
        "ratio_of_totals": worker_tps / raw_tps,
        "pair_ratios": pair_ratios,
        "client_cpu_s_worker": cpu["worker"],
        "client_cpu_s_raw": cpu["raw"],
        "worker_tokens": timings["worker"][1],
        "raw_tokens": timings["raw"][1],
        "worker_s": timings["worker"][0],
        "raw_s": timings["raw"][0],
        "groups_per_round": groups,
        "group_size": group_size,
        "concurrency": groups * group_size,
        "max_new_tokens": max_new,
        "rounds": rounds,
        "decoding": "greedy",
        "model": str(model_path),
    }
