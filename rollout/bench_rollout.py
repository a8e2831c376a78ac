"""`slime-rl bench rollout`: tokens/s through a rollout worker (episodes, env rewards, buffer pushes) against the
same engine driven directly by the client at the same concurrency with the same prompts, in one run."""
from __future__ import annotations

import asyncio
import tempfile
import time

import torch

from slime_rl.config import load_config
from slime_rl.model_store import DEFAULT_OUT
from slime_rl.redis_server import EmbeddedRedis

from .engine_client import EngineClient
from .engine_launcher import launch_cpu_engine
from .episode import encode_chat
from .worker import RolloutWorkerCore


def run(quick: bool = False) -> dict:
    groups, group_size, max_new = (2, 4, 8) if quick else (8, 8, 24)
    engine = launch_cpu_engine(DEFAULT_OUT, max_batch_size=64, threads=torch.get_num_threads())
    try:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as redis:
            cfg = load_config(None, [f"model.path={DEFAULT_OUT}", f"rollout.group_size={group_size}",
                                     f"rollout.sampling.max_new_tokens={max_new}", "rollout.concurrency=64",
                                     f"buffer.high_water={groups * 4}"])
            worker = RolloutWorkerCore(cfg, [engine.url], redis.url, 0)
            samples = worker.dataset[:groups]

            async def raw() -> tuple[float, int]:
                client = EngineClient(engine.url)
                env = worker.env_cls()
                ids = [encode_chat(worker.tokenizer, env.prompt(s)) for s in samples]
                sp = {"max_new_tokens": max_new, "temperature": 1.0, "n": group_size}
                t0 = time.perf_counter()
                outs = await asyncio.gather(*(client.generate(i, sp) for i in ids))
                return time.perf_counter() - t0, sum(len(o.output_ids) for batch in outs for o in batch)

            asyncio.run(raw())  # warm-up
            raw_s, raw_tokens = asyncio.run(raw())
            t0 = time.perf_counter()
            asyncio.run(worker.generate_groups(groups))
            ours_s = time.perf_counter() - t0
            ours_tokens = worker.tokens
    finally:
        engine.stop()
    ours_tps, raw_tps = ours_tokens / ours_s, raw_tokens / raw_s
    return {"groups": groups, "group_size": group_size, "max_new_tokens": max_new, "tokens_per_s": ours_tps,
            "raw_engine_tokens_per_s": raw_tps, "ratio_vs_raw_engine": ours_tps / raw_tps}
