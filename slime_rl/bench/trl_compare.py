"""`slime-rl bench trl`: slime-rl against TRL's GRPOTrainer on the same model, task and sample budget, one run.

Both sides read one RunConfig (examples/math/config.yaml): SmolLM2-135M-Instruct, the arithmetic env's train
prompts and reward, `group_size` samples per prompt, `groups_per_step` prompts per optimizer step,
`max_new_tokens`, temperature, Adam lr/betas/grad-clip, no KL, token-level (DAPO) loss normalisation, the same
number of steps, and the same precision: with `model.dtype` bfloat16 (the demo's `auto` on a CPU with AMX) slime-rl
trains Megatron in bf16 with float32 main weights and TRL trains under its own bf16 mixed precision (float32
weights, bf16 autocast); with float32 both run float32. TRL uses its defaults for everything else on CPU
(transformers `generate`, no vLLM), except gradient checkpointing, which its config turns on by default and
slime-rl does not use.

Measured per side:
  wall_s         training only: TRL around `trainer.train()`; slime-rl from the end of its held-out evaluation
                 before training to its last optimizer step (metrics.jsonl timestamps), so start-up of Ray,
                 engines and Redis and both evaluations are outside the window on both sides
  samples        samples that went into optimizer steps (slime-rl: trained groups x group size; samples its
                 workers generated but the trainer never consumed are not counted)
  heldout_reward greedy decoding on the held-out file (EVAL_SAMPLES rows) with the env's reward; slime-rl
                 through its own engine, TRL's model through `generate` with the same chat template. "Equal or
                 better" is judged within noise: a delta above -2 standard errors over the distinct prompts
TRL runs first so that nothing slime-rl starts (Ray, engines) is still winding down while TRL is timed.
"""

from __future__ import annotations

import gc
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import RunConfig, load_config
from ..env_api import EnvError, SingleTurnEnv, build_env_factory, load_env_class
from ..rollout.dataset import load_prompts

CONFIG = Path("examples/math/config.yaml")
TARGET_RATIO = 2.0
EVAL_SAMPLES = 200  # the whole held-out file (90 distinct questions): the demo's 64 leave the rewards too noisy


def bench_config(run_dir: Path, steps: int, config: Path = CONFIG) -> RunConfig:
    """The shared workload; no dashboard or checkpoints (TRL saves nothing either)."""
    return load_config(
        config,
        [
            f"run_dir={run_dir}",
            f"trainer.max_steps={steps}",
            "trainer.checkpoint_every=0",
            "eval_every=0",
            "dashboard.enabled=false",
            f"eval_samples={EVAL_SAMPLES}",
        ],
    )


def single_turn_env(cfg: RunConfig) -> SingleTurnEnv:
    env_cls = load_env_class(cfg.env.name)
    if not issubclass(env_cls, SingleTurnEnv) or cfg.env.reward_fn:
        raise EnvError("bench trl compares single-turn environments scored by their own reward()")
    return build_env_factory(env_cls, cfg.env.kwargs).new_episode()


def prompt_rows(env: SingleTurnEnv, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL dataset rows: the env's chat prompt plus the whole sample as JSON (any schema survives `datasets`)."""
    return [{"prompt": env.prompt(s), "sample": json.dumps(s)} for s in samples]


def env_reward(env: SingleTurnEnv) -> Callable[..., list[float]]:
    """A TRL reward function that scores each completion with the env's own reward(sample, text)."""

    def env_reward(completions: list[Any], sample: list[str], **_: Any) -> list[float]:
        # conversational prompts give [{"role": "assistant", "content": text}] per completion, plain ones a str
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return [float(env.reward(json.loads(s), t)) for s, t in zip(sample, texts)]

    return env_reward


def trl_args(cfg: RunConfig, output_dir: Path) -> dict[str, Any]:
    """GRPOConfig keyword arguments matching slime-rl's workload (kept a dict so it can be checked without TRL)."""
    r, t, s = cfg.rollout, cfg.trainer, cfg.rollout.sampling
    if cfg.loss.kind != "bilateral":  # its band is what TRL's epsilon / epsilon_high express
        raise ValueError(
            f"bench trl compares the bilateral loss with TRL's clip; the config has loss.kind={cfg.loss.kind}"
        )
    return {
        "output_dir": str(output_dir),
        "max_steps": t.max_steps,
        "seed": t.seed,
        "num_generations": r.group_size,
        "per_device_train_batch_size": r.group_size * r.groups_per_step,
        "gradient_accumulation_steps": 1,
        "num_iterations": 1,  # one optimizer step per generated batch, as slime
        "max_completion_length": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": max(s.top_k, 0),  # slime's -1 and TRL's 0 both mean "off"
        "learning_rate": t.lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": t.weight_decay,
        "adam_beta1": t.adam_beta1,
        "adam_beta2": t.adam_beta2,
        "max_grad_norm": t.grad_clip,
        "beta": cfg.loss.kl_coef,
        "epsilon": cfg.loss.eps_low,
        "epsilon_high": cfg.loss.eps_high,
        "loss_type": "dapo",
        "scale_rewards": "group" if cfg.loss.std_normalize else "none",
        "use_cpu": True,
        "bf16": cfg.model.dtype == "bfloat16",
        "fp16": cfg.model.dtype == "float16",
        "use_vllm": False,
        "activation_checkpointing": False,  # TRL's default (via the `gradient_checkpointing` alias) is on
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "log_completions": False,
        "dataloader_num_workers": 0,
    }


def greedy_eval(
    model, tokenizer, env: SingleTurnEnv, samples: list[dict[str, Any]], max_new_tokens: int, batch_size: int = 32
) -> dict[str, Any]:
    """Held-out reward as slime-rl's eval worker computes it: chat template with the generation prompt, greedy,
    stop at EOS or max_new_tokens, reply decoded without special tokens, env.reward."""
    import torch

    tokenizer.padding_side = "left"  # decoder-only batching: every prompt ends where generation starts
    rewards, lengths = [], []
    model.eval()
    for i in range(0, len(samples), batch_size):
        batch = samples[i : i + batch_size]
        texts = [
            tokenizer.apply_chat_template(env.prompt(s), add_generation_prompt=True, tokenize=False) for s in batch
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        for s, ids in zip(batch, out[:, enc["input_ids"].shape[1] :].tolist()):
            if tokenizer.eos_token_id in ids:  # keep the EOS (as the engine does), drop the padding after it
                ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
            rewards.append(float(env.reward(s, tokenizer.decode(ids, skip_special_tokens=True))))
            lengths.append(len(ids))
    n = len(rewards)
    return {
        "reward_mean": sum(rewards) / n if n else 0.0,
        "samples": n,
        "response_len_mean": sum(lengths) / n if n else 0.0,
    }


class LoadSampler:
    """Mean 1-minute load average while a side runs (its own processes included): on a shared machine, the context
    its numbers need (a side that ran beside someone else's job was slowed by it)."""

    def __init__(self, every_s: float = 5.0):
        self.every_s, self.samples, self._stop = every_s, [os.getloadavg()[0]], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return _mean(self.samples)


def run_trl(cfg: RunConfig, out_dir: Path) -> dict[str, Any]:
    try:
        import trl
        from datasets import Dataset
    except ImportError as exc:
        raise RuntimeError(
            "bench trl needs TRL: pip install -c requirements/constraints.txt -r requirements/bench.txt"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    env = single_turn_env(cfg)
    env_cls = type(env)
    train = load_prompts(env_cls, cfg.env.dataset, "train", cfg.env.dataset_kwargs)
    held_out = load_prompts(env_cls, cfg.env.eval_dataset, "eval", cfg.env.dataset_kwargs)[: cfg.eval_samples]
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    # float32 weights; a bfloat16 config trains under TRL's mixed precision (args "bf16"), as Megatron keeps
    # float32 main weights beside its bfloat16 ones
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=torch.float32)
    max_new = cfg.rollout.sampling.max_new_tokens
    before = greedy_eval(model, tokenizer, env, held_out, max_new)
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=env_reward(env),
        processing_class=tokenizer,
        args=trl.GRPOConfig(**trl_args(cfg, out_dir)),
        train_dataset=Dataset.from_list(prompt_rows(env, train)),
    )
    with LoadSampler() as load:
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    steps = trainer.state.global_step
    samples = steps * trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    logged = [h for h in trainer.state.log_history if "reward" in h]
    rewards = [h["reward"] for h in logged]
    after = greedy_eval(trainer.model, tokenizer, env, held_out, max_new)
    del trainer, model
    gc.collect()
    return {
        "version": trl.__version__,
        "steps": steps,
        "samples": samples,
        "wall_s": wall,
        "samples_per_s": samples / wall if wall else 0.0,
        "heldout_reward_before": before["reward_mean"],
        "heldout_reward_after": after["reward_mean"],
        "heldout_samples": after["samples"],
        "train_reward_first_steps": _mean(rewards[:3]),
        "train_reward_last_steps": _mean(rewards[-3:]),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m_mean": load.mean,
        "step_s_mean": _mean([h.get("step_time", 0.0) for h in logged]),
    }  # generation + optimizer step


def slime_train_window(metrics_path: Path) -> tuple[float, list[dict[str, Any]]]:
    """(seconds, trainer records) from the launcher's pre-training eval record to the last trainer record."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    start = next(r["t"] for r in records if r["kind"] == "eval" and r.get("step") == 0)
    steps = [r for r in records if r["kind"] == "trainer" and r["t"] >= start]
    if not steps:
        raise RuntimeError(f"{metrics_path}: no trainer step after the first evaluation")
    return steps[-1]["t"] - start, steps


def run_slime(cfg: RunConfig) -> dict[str, Any]:
    from ..launcher import train

    with LoadSampler() as load:  # the whole run; its training window is most of it
        if train(cfg) != 0:
            raise RuntimeError("slime-rl training failed")
    run_dir = Path(cfg.run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    wall, steps = slime_train_window(run_dir / "metrics.jsonl")
    samples = summary["trained_groups"] * cfg.rollout.group_size
    return {
        "mode": cfg.mode,
        "steps": summary["steps"],
        "samples": samples,
        "wall_s": wall,
        "samples_per_s": samples / wall if wall else 0.0,
        "end_to_end_wall_s": summary["wall_s"],
        "heldout_reward_before": summary["heldout_reward_before"],
        "heldout_reward_after": summary["heldout_reward_after"],
        "heldout_samples": cfg.eval_samples,
        "train_reward_first_steps": summary["train_reward_first_steps"],
        "train_reward_last_steps": summary["train_reward_last_steps"],
        "staleness_mean": summary["staleness_mean"],
        "loadavg_1m_mean": load.mean,
        # the optimizer step alone (rollout runs beside it in async mode), to see where the time goes
        "trainer_step_s_mean": _mean([r.get("step_time_s", 0.0) for r in steps]),
    }


def reward_delta_se(a: float, b: float, n: int) -> float:
    """Standard error of the difference of two mean rewards in [0, 1], each over the same n distinct prompts,
    taking the Bernoulli variance m(1 - m) (the largest a [0, 1] reward with mean m can have)."""
    return math.sqrt((a * (1 - a) + b * (1 - b)) / n) if n else float("inf")


def compare(slime: dict[str, Any], trl: dict[str, Any], distinct_prompts: int) -> dict[str, Any]:
    """Throughput ratio, and whether slime-rl's held-out reward is equal or better: strictly (delta >= 0), and
    within noise (delta >= -2 standard errors over the distinct held-out prompts), which meets_target uses."""
    ratio = slime["samples_per_s"] / trl["samples_per_s"] if trl["samples_per_s"] else float("inf")
    a, b = slime["heldout_reward_after"], trl["heldout_reward_after"]
    se = reward_delta_se(a, b, distinct_prompts)
    within_noise = a - b >= -2 * se
    return {
        "throughput_ratio_vs_trl": ratio,
        "wall_ratio_trl_over_slime": trl["wall_s"] / slime["wall_s"],
        "heldout_reward_after_delta_vs_trl": a - b,
        "heldout_reward_delta_se": se,
        "heldout_distinct_prompts": distinct_prompts,
        "reward_not_worse": a >= b,
        "reward_within_noise": within_noise,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO and within_noise,
    }


def distinct_prompts(cfg: RunConfig) -> int:
    """How many different prompts the held-out evaluation holds (greedy decoding scores a repeated one the same)."""
    env = single_turn_env(cfg)
    rows = load_prompts(type(env), cfg.env.eval_dataset, "eval", cfg.env.dataset_kwargs)[: cfg.eval_samples]
    return len({json.dumps(env.prompt(r), sort_keys=True) for r in rows})


def run(quick: bool = False) -> dict[str, Any]:
    steps = 2 if quick else 16
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        cfg = bench_config(Path(tmp) / "slime", steps)
        trl_result = run_trl(cfg, Path(tmp) / "trl")
        slime_result = run_slime(cfg)
    distinct = distinct_prompts(cfg)
    r, s = cfg.rollout, cfg.rollout.sampling
    workload = {
        "model": str(cfg.model.path),
        "env": cfg.env.name,
        "dataset": str(cfg.env.dataset),
        "eval_dataset": str(cfg.env.eval_dataset),
        "steps": steps,
        "group_size": r.group_size,
        "groups_per_step": r.groups_per_step,
        "max_new_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "lr": cfg.trainer.lr,
        "eval_samples": cfg.eval_samples,
        "dtype": cfg.model.dtype,
    }
    return {
        **compare(slime_result, trl_result, distinct),
        "workload": workload,
        "slime": slime_result,
        "trl": trl_result,
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
