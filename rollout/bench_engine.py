"""`slime-rl bench engine`: the CPU engine against transformers `generate` in static batches of 8 and against
transformers' own continuous batching, same model, same prompts, same run, on a long-tail workload (response
lengths lognormal, p99 about 10x the median). Throughput counts requested (useful) tokens only."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import torch

from slime_rl.model_store import DEFAULT_OUT

from .engine_client import EngineClient
from .engine_launcher import launch_cpu_engine


def workload(n: int, median: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    sigma = np.log(10) / 2.326  # p99 / median = exp(2.326 sigma) = 10
    return [int(x) for x in np.clip(rng.lognormal(np.log(median), sigma, n).round(), 2, 12 * median)]


def prompts(tokenizer, n: int) -> list[list[int]]:
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Tell me fact number {i} about the number {i * 7 + 3}."}]
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out


def bench_ours(model_path, ps: list[list[int]], lengths: list[int], threads: int) -> float:
    engine = launch_cpu_engine(model_path, max_batch_size=len(ps), threads=threads)
    try:
        async def go():
            client = EngineClient(engine.url)
            await client.generate(ps[0], {"max_new_tokens": 2})  # warm-up
            t0 = time.perf_counter()
            await asyncio.gather(*(client.generate(p, {"max_new_tokens": n, "temperature": 1.0, "ignore_eos": True})
                                   for p, n in zip(ps, lengths)))
            return time.perf_counter() - t0
        return asyncio.run(go())
    finally:
        engine.stop()


def bench_hf_static(model, ps: list[list[int]], lengths: list[int], batch: int = 8) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(ps), batch):
        chunk, lens = ps[i:i + batch], lengths[i:i + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():  # a static batch runs until its longest member is done
            model.generate(ids, attention_mask=mask, max_new_tokens=max(lens), min_new_tokens=max(lens),
                           do_sample=True, pad_token_id=0)
    return time.perf_counter() - t0


def bench_hf_cb(model, ps: list[list[int]], lengths: list[int]) -> float | str:
    """transformers' continuous batching; its API moves between releases, so failures are reported, not hidden."""
    from transformers import GenerationConfig

    try:
        t0 = time.perf_counter()
        cfg = GenerationConfig(max_new_tokens=max(lengths), do_sample=True, eos_token_id=-1, pad_token_id=0)
        model.generate_batch(inputs=ps, generation_config=cfg)
        return time.perf_counter() - t0
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"


def run(quick: bool = False) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    n, median = (8, 8) if quick else (32, 24)
    model_path = DEFAULT_OUT
    tok = AutoTokenizer.from_pretrained(model_path)
    ps, lengths = prompts(tok, n), workload(n, median)
    useful = sum(lengths)
    ours = bench_ours(model_path, ps, lengths, threads)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    static = bench_hf_static(model, ps, lengths)
    # transformers CB stops each request at the batch's max_new_tokens: count the tokens it generated
    cb = bench_hf_cb(model, ps, lengths)
    cb_tps = n * max(lengths) / cb if isinstance(cb, float) else None
    return {
        "workload": {"requests": n, "median_len": float(np.median(lengths)), "p99_len": float(np.percentile(lengths, 99)),
                     "max_len": max(lengths), "useful_tokens": useful, "threads": threads},
        "tokens_per_s": useful / ours,
        "hf_generate_tokens_per_s": useful / static,
        "speedup_vs_hf_generate": static / ours,
        "transformers_cb_tokens_per_s": cb_tps if cb_tps else cb,
        "speedup_vs_transformers_cb": (cb_tps and (useful / ours) / cb_tps) or None,
        "note": "transformers CB generates every request to the batch's max length (no per-request max_new_tokens "
                "in this call); its tokens/s counts all of them, which favours it",
    }
