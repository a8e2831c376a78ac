"""The two training loops. They differ only in where the wait for rollouts sits (as in slime):
async: workers produce continuously (bounded by staleness tau) while the trainer steps;
sync: generate a step's groups, wait, train, push, wait for the engines to hold the new weights."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import ray

from .run_context import RunContext
from .watchdog import BatchOutcome, ProgressWatchdog, RunStalled, describe_failures

StepCallback = Callable[[dict[str, Any]], None]
NoticeCallback = Callable[[str], None]  # a line for the console: something the user should see while it happens
log = logging.getLogger("slime_rl.loops")


def call(ctx: RunContext, refs, what: str):
    """ray.get with the run's deadline for one call to a component; a call past it stops the run, naming it."""
    timeout = ctx.cfg.watchdog.call_timeout_s
    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise RunStalled(f"{what} did not finish within {timeout:g} s (watchdog.call_timeout_s)") from None


def push_weights(ctx: RunContext, wait: bool) -> dict[str, Any]:
    """The trainer publishes once to its relay and goes back to work (async: it hands a copy of the weights to its
    publishing thread and trains on); `wait` makes the push a barrier (sync mode)."""
    receipt = call(ctx, ctx.trainer.publish_weights.remote(ctx.relay.publisher(), background=not wait),
                   "the trainer's weight publication")
    if wait:
        receipt["propagation_s"] = ctx.relay.wait_for_version(receipt["version"],
                                                              timeout=ctx.cfg.watchdog.call_timeout_s)
    return receipt


def async_loop(ctx: RunContext, on_step: StepCallback, notice: NoticeCallback = log.warning) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    producing = {w: w.run.remote() for w in ctx.workers}
    history: list[dict[str, Any]] = []
    pending_eval = None  # (step, ObjectRef): held-out evaluation running beside training
    controls = ControlInbox(ctx)
    watchdog = ProgressWatchdog(cfg.watchdog)
    while _steps_left(ctx):
        controls.apply(producing)
        _restart_dead_workers(ctx, producing)
        # short waits, so a rollout worker that died is restarted within seconds instead of starving the trainer
        metrics = call(ctx, ctx.trainer.train_step.remote(timeout_s=5.0), "a train step")
        if metrics is None:  # a step's groups are not all in yet (the trainer holds what came)
            watchdog.on_wait(controls.paused, lambda: describe_rollout(ctx))
            continue
        if not _trained(metrics, watchdog, notice):
            continue
        if metrics["step"] % cfg.relay.push_every == 0:
            metrics["push"] = push_weights(ctx, wait=False)
        pending_eval = _maybe_evaluate(ctx, metrics, pending_eval, on_step)
        history.append(metrics)
        on_step(metrics)
    if pending_eval is not None:
        _finish_eval(ctx, *pending_eval, on_step)
    for w in ctx.workers:
        w.stop.remote()
    # the last version is with the relay (or its error raised)
    call(ctx, ctx.trainer.finish_publication.remote(), "the last weight publication")
    _final_commit(ctx)
    return history


def sync_loop(ctx: RunContext, on_step: StepCallback, notice: NoticeCallback = log.warning) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    per_worker = _split(cfg.rollout.groups_per_step, len(ctx.workers))
    history = []
    watchdog = ProgressWatchdog(cfg.watchdog)
    while _steps_left(ctx):
        call(ctx, [w.generate_groups.remote(n) for w, n in zip(ctx.workers, per_worker) if n], "a rollout batch")
        # the workers have pushed the step's groups: the trainer finds them at once unless they were lost
        metrics = call(ctx, ctx.trainer.train_step.remote(timeout_s=cfg.watchdog.max_silence_s), "a train step")
        if metrics is None:
            watchdog.on_wait(False, lambda: describe_rollout(ctx))
            continue
        if not _trained(metrics, watchdog, notice):
            continue
        metrics["push"] = push_weights(ctx, wait=True)
        history.append(metrics)
        on_step(metrics)
    _final_commit(ctx)
    return history


class ControlInbox:
    """Acts on the dashboard's control actions (the run's control stream; the dashboard checks the token)."""

    def __init__(self, ctx: RunContext):
        from .buffer import connect, stream_tail

        self.ctx, self.stream, self.r = ctx, ctx.keys.control, connect(ctx.redis_url)
        self.last_id = stream_tail(self.r, self.stream)  # only actions sent after the run started
        self.paused = False

    def apply(self, producing: dict) -> None:
        for _, entries in self.r.xread({self.stream: self.last_id}, count=100) or []:
            for eid, fields in entries:
                self.last_id = eid
                self._act(fields.get(b"action", b"").decode(), producing)

    def _act(self, action: str, producing: dict) -> None:
        if action == "pause_rollout" and not self.paused:
            call(self.ctx, [w.stop.remote() for w in self.ctx.workers], "stopping the rollout workers")
            # their run() calls return once the groups in flight are cut short
            call(self.ctx, list(producing.values()), "the rollout workers winding down")
            producing.clear()
            self.paused = True
        elif action == "resume_rollout" and self.paused:
            for w in self.ctx.workers:
                producing[w] = w.run.remote()
            self.paused = False
        elif action == "checkpoint":
            call(self.ctx, self.ctx.trainer.save_checkpoint.remote(), "a checkpoint")
        else:
            return
        self.ctx.metrics.log("control", {"action": action})


def _maybe_evaluate(ctx: RunContext, metrics: dict[str, Any], pending, on_step: StepCallback):
    """Every `eval_every` steps, start a held-out evaluation on the eval worker without waiting for it."""
    if pending is not None and ray.wait([pending[1]], timeout=0)[0]:
        _finish_eval(ctx, *pending, on_step)
        pending = None
    if ctx.cfg.eval_every and metrics["step"] % ctx.cfg.eval_every == 0 and pending is None:
        pending = (metrics["step"], ctx.eval_worker.evaluate.remote(ctx.held_out, greedy=True))
    return pending


def _finish_eval(ctx: RunContext, step: int, ref, on_step: StepCallback) -> None:
    result = call(ctx, ref, "a held-out evaluation")
    ctx.metrics.log("eval", result, step=step)
    on_step({"eval": result, "eval_step": step})


def _steps_left(ctx: RunContext) -> int:
    """A resumed run continues to trainer.max_steps in total."""
    return max(0, ctx.cfg.trainer.max_steps - call(ctx, ctx.trainer.step.remote(), "the trainer"))


def _trained(metrics: dict[str, Any], watchdog: ProgressWatchdog, notice: NoticeCallback) -> bool:
    """Feed a batch the trainer read to the watchdog; True when the trainer took an optimizer step on it
    (False: every group failed, or was dropped by a filter)."""
    warning = watchdog.on_batch(BatchOutcome.of(metrics))
    if warning:
        notice(warning)
    return bool(metrics["stepped"])


def describe_rollout(ctx: RunContext) -> str:
    """What the rollout side says, for a run in which nothing reaches the trainer."""
    try:
        stats = ray.get([w.stats.remote() for w in ctx.workers], timeout=10)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
        return f"The rollout workers did not answer within 10 s ({type(exc).__name__})."
    started, pushed = sum(s["started"] for s in stats), sum(s["pushed"] for s in stats)
    in_flight = sum(s["groups_in_flight"] for s in stats)
    text = (f"Rollout workers: {started} groups started, {pushed} pushed, {in_flight} in flight, "
            f"{sum(s['at_capacity'] for s in stats)}/{len(stats)} waiting at their staleness capacity (a worker "
            f"starts new groups only as the policy version advances: loss.staleness_tau={ctx.cfg.loss.staleness_tau}).")
    failures: dict[str, int] = {}
    for s in stats:
        for reason, n in s["failure_reasons"].items():
            failures[reason] = failures.get(reason, 0) + n
    if failures:
        text += f" Episodes: {describe_failures(failures, sum(s['episodes'] for s in stats))}."
    return text


def _final_commit(ctx: RunContext) -> None:
    if ctx.cfg.trainer.checkpoint_every:  # the tail since the last periodic checkpoint
        call(ctx, ctx.trainer.save_checkpoint.remote(), "the final checkpoint")


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


def evaluate(ctx: RunContext, samples: list[dict]) -> dict[str, Any]:
    started = time.time()
    result = call(ctx, ctx.eval_worker.evaluate.remote(samples, greedy=True), "a held-out evaluation")
    result["eval_s"] = time.time() - started
    return result
