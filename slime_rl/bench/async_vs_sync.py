"""`slime-rl bench async`: the same long-tail workload trained in sync mode and in async mode, one run each, same
model, prompts, group size, steps and sample budget.

Workload: the arithmetic task with each prompt's response length fixed (EOS ignored) and drawn lognormal with
p99 about 10x the median, so a sync step waits for its longest group while the engine decodes it almost alone.
Sync here is the plain baseline (no over-provisioning: a step's groups are generated, then trained, then the
weights pushed and awaited); async is the default pipeline (bounded by staleness tau, partial rollouts on).

Measured per mode, over the training loop only (start-up and model loading excluded):
- wall_s; trainer_busy_s = time in optimizer steps plus weight publication; rollout_busy_s = time a worker had
  requests in flight; their idle fractions = 1 - busy / wall.
- speedup_vs_sync = sync wall / async wall.
- ratio_to_ideal = async wall / max(total generation time, total training time), both taken from the async run
  (rollout_busy_s and trainer_busy_s): 1.0 would be perfect overlap of generation and training.
Both parts share this machine's cores, so overlap also slows each part down: the busy times are measured under
that contention, as they happen."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from slime_rl.bench.engine import workload
from slime_rl.config import RunConfig, load_config
from slime_rl.env_api import read_jsonl
from slime_rl.results import TrainStepResult
from slime_rl.summary import mean_lag, staleness_hist

CONFIG = Path("examples/math/config.yaml")
TRAIN_ROWS = Path("examples/math/train.jsonl")


def long_tail_rows(n: int, median: int, max_len: int, seed: int = 0) -> list[dict[str, Any]]:
    """n arithmetic prompts, each carrying its own response length (lognormal, p99/median about 10, capped)."""
    rows = read_jsonl(TRAIN_ROWS)[:n]
    if len(rows) < n:
        raise ValueError(f"{TRAIN_ROWS} has {len(rows)} rows, the workload needs {n}")
    return [
        {**row, "max_new_tokens": min(length, max_len)} for row, length in zip(rows, workload(n, median, seed=seed))
    ]


def bench_config(mode: str, dataset: Path, run_dir: Path, steps: int, max_len: int, quick: bool) -> RunConfig:
    overrides = [
        f"mode={mode}",
        f"run_dir={run_dir}",
        f"name=bench-async-{mode}",
        f"env.dataset={dataset}",
        "dashboard.enabled=false",
        "eval_every=0",
        "trainer.checkpoint_every=0",
        f"trainer.max_steps={steps}",
        "rollout.group_size=4",
        f"rollout.groups_per_step={2 if quick else 4}",
        "rollout.concurrency=64",
        "rollout.shuffle=false",
        f"rollout.sampling.max_new_tokens={max_len}",
        "rollout.sampling.ignore_eos=true",
        "rollout.over_provision=1.0",
        "rollout.staleness_tau=2",
        "relay.push_every=1",
    ]
    return load_config(CONFIG, overrides)


def run_mode(cfg: RunConfig) -> dict[str, Any]:
    """Start every component, time the training loop alone, stop everything."""
    from slime_rl.loops import LoopEvents, async_loop, sync_loop
    from slime_rl.run_context import RunContext

    loop = async_loop if cfg.mode == "async" else sync_loop
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    with RunContext(cfg, Path(cfg.run_dir)) as ctx:
        ctx.held_out = []
        ctx.wait_until_ready()  # the window holds the loop alone, not the trainer still loading its model
        started = time.perf_counter()
        history = loop(ctx, LoopEvents())
        wall = time.perf_counter() - started
        rollout = ctx.rollout_stats()
    return measure(cfg.mode, wall, history, rollout)


def measure(mode: str, wall: float, history: list[TrainStepResult], rollout: dict[str, Any]) -> dict[str, Any]:
    """`history`: the trained steps of the loop."""
    updates, batches = [r.update for r in history], [r.batch for r in history]
    train_s = sum(u.step_time_s for u in updates)
    publish_s = sum(r.push.blocked_s for r in history if r.push is not None)
    trainer_busy = train_s + publish_s
    rollout_busy = max((w.get("active_s", 0.0) for w in rollout.get("per_worker", [])), default=0.0)
    return {
        "mode": mode,
        "steps": len(history),
        "wall_s": wall,
        "trainer_busy_s": trainer_busy,
        "trainer_idle_frac": max(0.0, 1 - trainer_busy / wall) if wall else 0.0,
        "rollout_busy_s": rollout_busy,
        "rollout_idle_frac": max(0.0, 1 - rollout_busy / wall) if wall else 0.0,
        "trained_samples": sum(b.kept for b in batches),
        # packed tokens through the model, and samples over tau left out: async may train fewer, shorter ones
        "trained_tokens": sum(u.tokens for u in updates),
        "dropped_stale": sum(b.dropped_stale for b in batches),
        "generated_tokens": rollout.get("tokens", 0),
        "staleness_mean": mean_lag(staleness_hist(history)),
        "reward_mean": sum(b.reward_mean for b in batches) / len(batches) if batches else 0.0,
    }


def compare(sync: dict[str, Any], async_: dict[str, Any]) -> dict[str, Any]:
    ideal = max(async_["rollout_busy_s"], async_["trainer_busy_s"])
    sync_rate, async_rate = (r["trained_tokens"] / r["wall_s"] if r["wall_s"] else 0.0 for r in (sync, async_))
    return {
        "speedup_vs_sync": sync["wall_s"] / async_["wall_s"],
        # the same steps, but async trains fewer tokens (long-tail groups still in flight or over tau): the
        # speedup in trained tokens per second is the stricter reading
        "trained_tokens_per_s_speedup": async_rate / sync_rate if sync_rate else float("inf"),
        "ideal_s": ideal,
        "ratio_to_ideal": async_["wall_s"] / ideal if ideal else float("inf"),
    }


def run(quick: bool = False) -> dict[str, Any]:
    steps, median, max_len = (3, 8, 96) if quick else (8, 12, 160)
    dtype = load_config(CONFIG).model.dtype
    with tempfile.TemporaryDirectory(prefix="slime-bench-async-") as tmp:
        root = Path(tmp)
        rows = long_tail_rows(200, median, max_len)
        lengths = sorted(r["max_new_tokens"] for r in rows)
        dataset = root / "long_tail.jsonl"
        dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
        results = {
            mode: run_mode(bench_config(mode, dataset, root / mode, steps, max_len, quick))
            for mode in ("sync", "async")
        }
    return {
        "workload": {
            "prompts": len(rows),
            "median_len": lengths[len(lengths) // 2],
            "p99_len": lengths[int(0.99 * (len(lengths) - 1))],
            "max_len_cap": max_len,
            "steps": steps,
            "dtype": dtype,
        },
        **compare(results["sync"], results["async"]),
        "sync": results["sync"],
        "async": results["async"],
    }
