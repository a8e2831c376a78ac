"""The two training loops. They differ only in where the wait for rollouts sits (as in slime):
async: workers produce continuously (bounded by staleness tau) while the trainer steps;
sync: generate a step's groups, wait, train, push, wait for the engines to hold the new weights."""
from __future__ import annotations

import time
from typing import Any, Callable

import ray

from .run_context import RunContext

StepCallback = Callable[[dict[str, Any]], None]
STARVED_S = 600.0  # async: how long the trainer may wait for data before the run is declared stuck


def push_weights(ctx: RunContext, wait: bool) -> dict[str, Any]:
    """The trainer publishes once to its relay and goes back to work (async: it hands a copy of the weights to its
    publishing thread and trains on); `wait` makes the push a barrier (sync mode)."""
    receipt = ray.get(ctx.trainer.publish_weights.remote(ctx.relay.publisher(), background=not wait))
    if wait:
        receipt["propagation_s"] = ctx.relay.wait_for_version(receipt["version"], timeout=600)
    return receipt


def async_loop(ctx: RunContext, on_step: StepCallback) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    producing = {w: w.run.remote() for w in ctx.workers}
    history: list[dict[str, Any]] = []
    pending_eval = None  # (step, ObjectRef): held-out evaluation running beside training
    controls = ControlInbox(ctx)
    starved_since = time.monotonic()
    while _steps_left(ctx):
        controls.apply(producing)
        _restart_dead_workers(ctx, producing)
        # short waits, so a rollout worker that died is restarted within seconds instead of starving the trainer
        metrics = ray.get(ctx.trainer.train_step.remote(timeout_s=5.0))
        if metrics is None:  # a step's groups are not all in yet (the trainer holds what came)
            if controls.paused:  # rollouts paused from the dashboard: waiting for a resume is not starving
                starved_since = time.monotonic()
            elif time.monotonic() - starved_since > STARVED_S:
                raise RuntimeError(f"no trajectories reached the trainer for {STARVED_S:.0f} s: rollout is stuck "
                                   "(see logs/)")
            continue
        starved_since = time.monotonic()
        if not metrics["stepped"]:  # every group of this batch was too stale: nothing was trained
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
    ray.get(ctx.trainer.finish_publication.remote())  # the last version is with the relay (or its error raised)
    _final_commit(ctx)
    return history


def sync_loop(ctx: RunContext, on_step: StepCallback) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    per_worker = _split(cfg.rollout.groups_per_step, len(ctx.workers))
    history = []
    while _steps_left(ctx):
        ray.get([w.generate_groups.remote(n) for w, n in zip(ctx.workers, per_worker) if n])
        metrics = ray.get(ctx.trainer.train_step.remote(timeout_s=600.0))
        if metrics is None:
            raise RuntimeError("sync step produced no trainable groups")
        if not metrics["stepped"]:
            continue
        metrics["push"] = push_weights(ctx, wait=True)
        history.append(metrics)
        on_step(metrics)
    _final_commit(ctx)
    return history


class ControlInbox:
    """Acts on the dashboard's control actions (the `slime:control` stream; the dashboard checks the token)."""

    def __init__(self, ctx: RunContext):
        from .buffer import connect
        from .metrics import CONTROL_STREAM

        self.ctx, self.stream, self.r = ctx, CONTROL_STREAM, connect(ctx.redis_url)
        last = self.r.xrevrange(self.stream, count=1)
        self.last_id = last[0][0] if last else "0-0"  # only actions sent after the run started
        self.paused = False

    def apply(self, producing: dict) -> None:
        for _, entries in self.r.xread({self.stream: self.last_id}, count=100) or []:
            for eid, fields in entries:
                self.last_id = eid
                self._act(fields.get(b"action", b"").decode(), producing)

    def _act(self, action: str, producing: dict) -> None:
        if action == "pause_rollout" and not self.paused:
            ray.get([w.stop.remote() for w in self.ctx.workers])
            ray.get(list(producing.values()))  # their run() calls return once stopped
            producing.clear()
            self.paused = True
        elif action == "resume_rollout" and self.paused:
            for w in self.ctx.workers:
                producing[w] = w.run.remote()
            self.paused = False
        elif action == "checkpoint":
            ray.get(self.ctx.trainer.save_checkpoint.remote())
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
    result = ray.get(ref)
    ctx.metrics.log("eval", result, step=step)
    on_step({"eval": result, "eval_step": step})


def _steps_left(ctx: RunContext) -> int:
    """A resumed run continues to trainer.max_steps in total."""
    return max(0, ctx.cfg.trainer.max_steps - ray.get(ctx.trainer.step.remote()))


def _final_commit(ctx: RunContext) -> None:
    if ctx.cfg.trainer.checkpoint_every:  # the tail since the last periodic checkpoint
        ray.get(ctx.trainer.save_checkpoint.remote())


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
    result = ray.get(ctx.eval_worker.evaluate.remote(samples, greedy=True))
    result["eval_s"] = time.time() - started
    return result
