"""The two training loops. They differ only in where the wait for rollouts sits (as in slime):
async: workers produce continuously (bounded by staleness tau) while the trainer steps;
sync: generate a step's groups, wait, train, push, wait for the engines to hold the new weights.
Both feed every batch to the progress watchdog, which stops a run that cannot make progress, naming the cause."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray

from .controls import ControlInbox
from .results import EvalResult, PushReceipt, StepState, TrainStepResult
from .run_context import RunContext
from .watchdog import ProgressWatchdog, describe_failures

log = logging.getLogger("slime_rl.loops")


@dataclass
class LoopEvents:
    """What a loop reports while it runs: each trained step, each held-out evaluation, and notices (a line the
    user should see while it happens, e.g. a batch that held nothing trainable)."""

    on_step: Callable[[TrainStepResult], None] = lambda result: None
    on_eval: Callable[[int, EvalResult], None] = lambda step, result: None
    notice: Callable[[str], None] = log.warning


def push_weights(ctx: RunContext, wait: bool) -> PushReceipt:
    """The trainer publishes once to its relay and goes back to work (async: it hands a copy of the weights to its
    publishing thread and trains on); `wait` makes the push a barrier (sync mode)."""
    receipt = ctx.call(
        ctx.trainer.publish_weights.remote(ctx.relay.publisher(), background=not wait),
        "the trainer's weight publication",
    )
    if wait:
        receipt.propagation_s = ctx.relay.wait_for_version(receipt.version, timeout=ctx.cfg.watchdog.call_timeout_s)
    return receipt


def async_loop(ctx: RunContext, events: LoopEvents) -> list[TrainStepResult]:
    cfg = ctx.cfg
    producing = {w: w.run.remote() for w in ctx.workers}
    history: list[TrainStepResult] = []
    pending_eval = None  # (step, ObjectRef): held-out evaluation running beside training
    controls = ControlInbox(ctx)
    watchdog = ProgressWatchdog(cfg.watchdog)
    while _steps_left(ctx):
        controls.apply(producing)
        _restart_dead_workers(ctx, producing)
        # short waits, so a rollout worker that died is restarted within seconds instead of starving the trainer
        result = ctx.call(ctx.trainer.train_step.remote(timeout_s=5.0), "a train step")
        if not _trained(ctx, result, watchdog, events, paused=controls.paused):
            continue
        if result.step % cfg.relay.push_every == 0:
            result.push = push_weights(ctx, wait=False)
        pending_eval = _maybe_evaluate(ctx, result.step, pending_eval, events)
        history.append(result)
        events.on_step(result)
    if pending_eval is not None:
        _finish_eval(ctx, *pending_eval, events)
    for w in ctx.workers:
        w.stop.remote()
    # the last version is with the relay (or its error raised)
    ctx.call(ctx.trainer.finish_publication.remote(), "the last weight publication")
    _final_commit(ctx)
    return history


def sync_loop(ctx: RunContext, events: LoopEvents) -> list[TrainStepResult]:
    cfg = ctx.cfg
    per_worker = _split(cfg.rollout.groups_per_step, len(ctx.workers))
    history: list[TrainStepResult] = []
    watchdog = ProgressWatchdog(cfg.watchdog)
    while _steps_left(ctx):
        ctx.call([w.generate_groups.remote(n) for w, n in zip(ctx.workers, per_worker) if n], "a rollout batch")
        # the workers have pushed the step's groups: the trainer finds them at once unless they were lost
        result = ctx.call(ctx.trainer.train_step.remote(timeout_s=cfg.watchdog.max_silence_s), "a train step")
        if not _trained(ctx, result, watchdog, events, paused=False):
            continue
        result.push = push_weights(ctx, wait=True)
        history.append(result)
        events.on_step(result)
    _final_commit(ctx)
    return history


def _trained(
    ctx: RunContext, result: TrainStepResult, watchdog: ProgressWatchdog, events: LoopEvents, paused: bool
) -> bool:
    """Feed what a train step call brought to the watchdog; True when the trainer took an optimizer step."""
    if result.state is StepState.NO_DATA_YET:  # a step's groups are not all in yet (the trainer holds what came)
        watchdog.on_wait(paused, lambda: describe_rollout(ctx))
        return False
    warning = watchdog.on_batch(result.batch)
    if warning:
        events.notice(warning)
    return result.trained


def describe_rollout(ctx: RunContext) -> str:
    """What the rollout side says, for a run in which nothing reaches the trainer."""
    try:
        stats = ray.get([w.stats.remote() for w in ctx.workers], timeout=10)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
        return f"The rollout workers did not answer within 10 s ({type(exc).__name__})."
    started, pushed = sum(s["started"] for s in stats), sum(s["pushed"] for s in stats)
    in_flight = sum(s["groups_in_flight"] for s in stats)
    text = (
        f"Rollout workers: {started} groups started, {pushed} pushed, {in_flight} in flight, "
        f"{sum(s['at_capacity'] for s in stats)}/{len(stats)} waiting at their staleness capacity (a worker "
        "starts new groups only as the policy version advances: "
        f"rollout.staleness_tau={ctx.cfg.rollout.staleness_tau})."
    )
    failures: dict[str, int] = {}
    for s in stats:
        for reason, n in s["failure_reasons"].items():
            failures[reason] = failures.get(reason, 0) + n
    if failures:
        text += f" Episodes: {describe_failures(failures, sum(s['episodes'] for s in stats))}."
    return text


def _maybe_evaluate(ctx: RunContext, step: int, pending, events: LoopEvents):
    """Every `eval_every` steps, start a held-out evaluation on the eval worker without waiting for it."""
    if pending is not None and ray.wait([pending[1]], timeout=0)[0]:
        _finish_eval(ctx, *pending, events)
        pending = None
    if ctx.cfg.eval_every and step % ctx.cfg.eval_every == 0 and pending is None:
        pending = (step, ctx.eval_worker.evaluate.remote(ctx.held_out, greedy=True))
    return pending


def _finish_eval(ctx: RunContext, step: int, ref, events: LoopEvents) -> None:
    result: EvalResult = ctx.call(ref, "a held-out evaluation")
    ctx.metrics.log("eval", result.model_dump(), step=step)
    events.on_eval(step, result)


def _steps_left(ctx: RunContext) -> int:
    """A resumed run continues to trainer.max_steps in total."""
    return max(0, ctx.cfg.trainer.max_steps - ctx.call(ctx.trainer.step.remote(), "the trainer"))


def _final_commit(ctx: RunContext) -> None:
    if ctx.cfg.trainer.checkpoint_every:  # the tail since the last periodic checkpoint
        ctx.call(ctx.trainer.save_checkpoint.remote(), "the final checkpoint")


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _restart_dead_workers(ctx: RunContext, producing: dict) -> None:
    """A worker actor that died is restarted by Ray (max_restarts); give it its job back."""
    if not producing:
        return
    done, _ = ray.wait(list(producing.values()), num_returns=len(producing), timeout=0)
    for w, ref in list(producing.items()):
        if ref in done:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                ctx._count("rollout-worker")
            except Exception as exc:  # a bug in a worker must be loud, not a silent stall
                raise RuntimeError(f"rollout worker failed: {exc}") from exc
            producing[w] = w.run.remote()


def evaluate(ctx: RunContext, samples: list[dict]) -> EvalResult:
    started = time.time()
    result: EvalResult = ctx.call(ctx.eval_worker.evaluate.remote(samples, greedy=True), "a held-out evaluation")
    result.eval_s = time.time() - started
    return result
