"""`slime-rl train`: start the run's components, evaluate, run the async or sync loop, evaluate again,
print a summary, and stop everything that was started."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .config import RunConfig, load_config
from .env_api import load_env_class
from .loops import LoopEvents, async_loop, evaluate, push_weights, sync_loop
from .results import EvalResult, TrainStepResult
from .run_context import RunContext
from .stop_signals import stop_on_signals
from .summary import summarize
from .watchdog import RunStalled, describe_failures

console = Console()


def eval_samples(cfg: RunConfig) -> list[dict[str, Any]]:
    """The held-out rows, read from the environment's class: no shared resources start in the driver."""
    from slime_rl.rollout.dataset import load_prompts

    return load_prompts(load_env_class(cfg.env.name), cfg.env.eval_dataset, "eval", cfg.env.dataset_kwargs)[
        : cfg.eval_samples
    ]


STALLED_EXIT = 3  # the run stopped because it could not make progress (the message says why)


def train(cfg: RunConfig, resume: Path | None = None) -> int:
    stop_on_signals()
    if resume is not None:
        # the run directory holds the config it was started with; command-line overrides are not re-applied
        cfg = load_config(resume / "config.yaml")
        cfg.run_dir = resume
    run_dir = Path(cfg.run_dir)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=run_dir / "logs" / "launcher.log",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return _train(cfg, run_dir, resume is not None)
    except RunStalled as exc:
        logging.getLogger("slime_rl.launcher").error("run stopped: %s", exc)
        console.print(f"[bold red]run stopped:[/] {exc}", soft_wrap=True)  # one line: easy to grep in logs
        return STALLED_EXIT


def _train(cfg: RunConfig, run_dir: Path, resume: bool) -> int:
    started = time.time()
    with RunContext(cfg, run_dir, resume=resume) as ctx:
        console.print(f"[bold]slime-rl[/] {cfg.mode} run {cfg.run_id} in {run_dir}  engines={ctx.engine_urls}")
        if ctx.dashboard is not None:
            console.print(f"dashboard: [link={ctx.dashboard.url}]{ctx.dashboard.url}[/link]")
        held_out = ctx.held_out = eval_samples(cfg)
        if resume:  # the engines start from the base weights: give them the checkpoint's before anything is sampled
            ctx.wait_until_ready()
            resumed = push_weights(ctx, wait=True)
            console.print(f"engines hold the resumed policy version {resumed.version}")
        before = evaluate(ctx, held_out)
        ctx.metrics.log("eval", before.model_dump(), step=0)
        console.print(f"held-out reward before training: {before.reward_mean:.3f} ({before.samples} prompts)")
        if before.failed:
            console.print(
                f"[yellow]held-out: {describe_failures(before.failure_reasons, before.samples)}", soft_wrap=True
            )
        ctx.wait_until_ready()
        loop = async_loop if cfg.mode == "async" else sync_loop
        board = TensorBoardLog(run_dir / "tensorboard")
        with _progress(cfg) as (progress, task):

            def on_step(result: TrainStepResult) -> None:
                board.write_step(result)
                progress.update(
                    task,
                    advance=1,
                    reward=result.batch.reward_mean,
                    tps=result.update.tokens_per_s,
                    version=result.version,
                )

            def on_eval(step: int, result: EvalResult) -> None:
                board.write_eval(step, result)
                progress.console.print(f"step {step}: held-out reward {result.reward_mean:.3f}")

            history = loop(
                ctx,
                LoopEvents(
                    on_step, on_eval, notice=lambda line: progress.console.print(f"[yellow]{line}", soft_wrap=True)
                ),
            )
        board.close()
        rollout_stats = ctx.rollout_stats()
        if history and history[-1].push is not None:  # let the last push land before measuring the final policy
            ctx.relay.wait_for_version(history[-1].push.version, timeout=cfg.watchdog.call_timeout_s)
        after = evaluate(ctx, held_out)
        summary = summarize(
            cfg,
            history,
            before,
            after,
            rollout_stats,
            time.time() - started,
            ctx.restarts,
            ctx.buffer_stats(),
            ctx.relay.engine_versions(),
        )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary)
    return 0


class TensorBoardLog:
    """Trainer scalars (and held-out evaluations) as TensorBoard events under RUN_DIR/tensorboard."""

    KEYS = (
        "loss",
        "reward_mean",
        "masked_frac",
        "clip_frac",
        "logp_diff_mean",
        "grad_norm",
        "tokens_per_s",
        "step_time_s",
        "kept",
        "dropped_stale",
    )

    def __init__(self, path: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(path))

    def write_step(self, result: TrainStepResult) -> None:
        record = result.record()
        for key in self.KEYS:
            if isinstance(record.get(key), (int, float)):
                self.writer.add_scalar(f"train/{key}", record[key], result.step)

    def write_eval(self, step: int, result: EvalResult) -> None:
        self.writer.add_scalar("eval/reward_mean", result.reward_mean, step)

    def close(self) -> None:
        self.writer.close()


class _progress:
    def __init__(self, cfg: RunConfig):
        self.progress = Progress(
            TextColumn("[bold blue]train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("reward {task.fields[reward]:.3f}"),
            TextColumn("{task.fields[tps]:.0f} tok/s"),
            TextColumn("v{task.fields[version]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.total = cfg.trainer.max_steps

    def __enter__(self):
        self.progress.start()
        task = self.progress.add_task("train", total=self.total, reward=float("nan"), tps=0.0, version=0)
        return self.progress, task

    def __exit__(self, *exc):
        self.progress.stop()


def _print_summary(s: dict[str, Any]) -> None:
    console.rule("summary")
    for key, value in s.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        console.print(f"{key:>32}: {value}")
