"""`slime-rl bench engine`: the CPU engine against transformers `generate` in static batches of 8 and against
transformers' own continuous batching, same model, same prompts, same run, on a long-tail workload (response
lengths lognormal, p99 about 10x the median). Throughput counts requested (useful) tokens only: a static batch
runs until its longest member is done, so its padding steps cost time but produce nothing."""

from __future__ import annotations

import asyncio
import os
import random
import time
from statistics import NormalDist

import numpy as np
import torch

from slime_rl.model_store import DEFAULT_OUT
from slime_rl.rollout.engine_client import EngineClient
from slime_rl.rollout.engine_launcher import launch_cpu_engine


def workload(n: int, median: int, tail: float = 10.0, seed: int = 0) -> list[int]:
    """n lognormal response lengths at evenly spaced quantiles (so a small sample still has the intended shape),
    sigma chosen so the sample's p99 is `tail` times its median, shuffled into a random arrival order."""
    z = [NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]

    def lengths(sigma: float) -> list[int]:
        return [max(2, round(median * float(np.exp(sigma * zi)))) for zi in z]

    lo, hi = 0.1, 3.0
    for _ in range(50):  # the sample's p99/median grows with sigma: bisect
        mid = (lo + hi) / 2
        ls = lengths(mid)
        lo, hi = (mid, hi) if np.percentile(ls, 99) / np.median(ls) < tail else (lo, mid)
    out = lengths((lo + hi) / 2)
    random.Random(seed).shuffle(out)
    return out


def prompts(tokenizer, n: int) -> list[list[int]]:
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Tell me fact number {i} about the number {i * 7 + 3}."}]
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out


def bench_ours(url: str, ps: list[list[int]], lengths: list[int]) -> tuple[float, int]:
    """Seconds for all requests sent at once over HTTP, and the tokens the engine returned."""

    async def go():
        client = EngineClient(url)
        await client.generate(ps[0], {"max_new_tokens": 2})  # warm-up
        t0 = time.perf_counter()
        outs = await asyncio.gather(
            *(
                client.generate(p, {"max_new_tokens": n, "temperature": 1.0, "ignore_eos": True})
                for p, n in zip(ps, lengths)
            )
        )
        return time.perf_counter() - t0, sum(len(o.output_ids) for o in outs)

    return asyncio.run(go())


def bench_hf_static(model, ps: list[list[int]], lengths: list[int], batch: int = 8) -> float:
    with torch.no_grad():  # warm-up, not timed (the engine gets one too)
        model.generate(torch.tensor([ps[0]]), max_new_tokens=2, do_sample=True, pad_token_id=0)
    t0 = time.perf_counter()
    for i in range(0, len(ps), batch):
        chunk, lens = ps[i : i + batch], lengths[i : i + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in chunk])  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():  # a static batch runs until its longest member is done
            model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=max(lens),
                min_new_tokens=max(lens),
                do_sample=True,
                top_k=0,
                top_p=1.0,
                pad_token_id=0,
            )
    return time.perf_counter() - t0


def bench_hf_cb(model, ps: list[list[int]], lengths: list[int]) -> float | str:
    """transformers' continuous batching with each request's own max_new_tokens (warm-up not timed). Its API
    moves between releases, so a failure is reported in the result, not hidden."""
    from transformers import GenerationConfig
    from transformers.generation.continuous_batching.utils import WorkloadHints

    try:
        cfg = GenerationConfig(
            max_new_tokens=max(lengths), do_sample=True, top_k=0, top_p=1.0, eos_token_id=-1, pad_token_id=0
        )
        hints = WorkloadHints(
            max_prompt_length=max(map(len, ps)), max_generated_length=max(lengths), num_requests=len(ps)
        )
        with model.continuous_batching_context_manager(
            generation_config=cfg, workload_hints=hints, block=True, timeout=10
        ) as manager:
            t0 = time.perf_counter()
            ids = {
                manager.add_request(p, request_id=f"r{i}", max_new_tokens=n, eos_token_id=-1)
                for i, (p, n) in enumerate(zip(ps, lengths))
            }
            done = 0
            while done < len(ids):
                res = manager.get_result(timeout=1)
                if res is not None and res.is_finished():
                    done += 1
                elif res is None and not manager.is_running():
                    return "unavailable: the continuous batching thread stopped"
            return time.perf_counter() - t0
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"


def run(quick: bool = False) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # one torch thread each by default: on a shared, oversubscribed machine two OpenMP threads spin against other
    # jobs and a transformers decode step went from 0.14 s to 5 s; SLIME_BENCH_THREADS overrides
    threads = int(os.environ.get("SLIME_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    n, median = (8, 4) if quick else (32, 12)
    model_path = DEFAULT_OUT
    tok = AutoTokenizer.from_pretrained(model_path)
    ps, lengths = prompts(tok, n), workload(n, median)
    useful = sum(lengths)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    engine = launch_cpu_engine(model_path, max_batch_size=n, threads=threads)
    walls: dict[str, list] = {"engine": [], "hf_generate": [], "transformers_cb": []}
    try:
        # rounds interleave the contenders so a burst of load from other jobs hits them alike; best round counts
        for _ in range(1 if quick else 2):
            wall, produced = bench_ours(engine.url, ps, lengths)
            if produced != useful:
                raise RuntimeError(f"engine returned {produced} tokens, {useful} requested")
            walls["engine"].append(wall)
            walls["hf_generate"].append(bench_hf_static(model, ps, lengths))
            walls["transformers_cb"].append(bench_hf_cb(model, ps, lengths))
    finally:
        engine.stop()
    ours, static = min(walls["engine"]), min(walls["hf_generate"])
    cb_ok = [w for w in walls["transformers_cb"] if isinstance(w, float)]
    cb = min(cb_ok) if cb_ok else walls["transformers_cb"][-1]
    return {
        "workload": {
            "requests": n,
            "prompt_tokens_mean": float(np.mean([len(p) for p in ps])),
            "median_len": float(np.median(lengths)),
            "p99_len": float(np.percentile(lengths, 99)),
            "max_len": max(lengths),
            "useful_tokens": useful,
            "threads": threads,
            "static_batch_maxes": [max(lengths[i : i + 8]) for i in range(0, n, 8)],
            "sampling": "temperature 1, no top-k/top-p, EOS ignored: every request runs to its length",
        },
        "tokens_per_s": useful / ours,
        "hf_generate_tokens_per_s": useful / static,
        "speedup_vs_hf_generate": static / ours,
        "transformers_cb_tokens_per_s": useful / cb if isinstance(cb, float) else cb,
        "speedup_vs_transformers_cb": cb / ours if isinstance(cb, float) else None,
        "wall_s_per_round": walls,
    }
