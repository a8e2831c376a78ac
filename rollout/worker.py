"""Rollout workers: run groups of episodes against the engines and push whole groups to the buffer.

async mode (`run`): keep producing; a group starts only while the AReaL-style capacity allows it:
    started_groups <= (v + tau + 1) * groups_per_step   (this worker's share)
with v = the policy version the engines hold (never ahead of the trainer's): groups are trained in order, so group
k is trained at trainer version ceil(k / groups_per_step) - 1 and its lag stays within tau even while a weight
push is still on its way to the engines.
sync mode (`generate_groups`): start over_provision x the needed groups, push the first ones to finish, abort
the long tail and keep those partials to resume first next time.
"""
from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray

from slime_rl.buffer import TrajectoryBuffer
from slime_rl.config import RunConfig
from slime_rl.env_api import load_env_class
from slime_rl.metrics import MetricsSink
from slime_rl.net import write_pid
from slime_rl.trajectory import Trajectory, TrajectoryGroup

from .episode import EpisodeRunner
from .partial import Partial, PartialStore
from .router import Router


@dataclass
class PendingGroup:
    sample: dict[str, Any]
    group_id: str
    prompt_index: int
    done: list[Trajectory] = field(default_factory=list)
    partials: list[Partial] = field(default_factory=list)


class RolloutWorkerCore:
    def __init__(self, cfg: RunConfig, engine_urls: list[str], redis_url: str, worker_index: int = 0,
                 run_dir: str | None = None):
        from transformers import AutoTokenizer

        self.cfg, self.index = cfg, worker_index
        if run_dir:
            write_pid(run_dir, f"rollout-{worker_index}")
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        self.env_cls = load_env_class(cfg.env.name)
        self.dataset = self.env_cls.load_dataset(cfg.env.dataset, split="train", **cfg.env.kwargs)
        if not self.dataset:
            raise ValueError(f"env {cfg.env.name}: the training dataset is empty")
        self.router = Router(engine_urls, timeout=cfg.engines.request_timeout_s)
        self.runner = EpisodeRunner(self.env_cls, cfg.env, cfg.rollout.sampling, self.tokenizer, self.router)
        self.buffer = TrajectoryBuffer(cfg.buffer, redis_url, consumer=f"rollout-{worker_index}")
        self.metrics = MetricsSink(f"rollout-{worker_index}", redis_url, run_dir)
        self.partials: list[PendingGroup] = []
        self.store = PartialStore(cfg.loss.staleness_tau)
        self._cursor = worker_index
        self._stop = asyncio.Event()
        self.started = self.pushed = self.tokens = self.failed = self.aborted = 0
        self.active_s = 0.0
        self._active_since: float | None = None
        self._inflight = 0
        self.engine_version = 0  # oldest version held by the engines, as last asked

    # --- public API -------------------------------------------------------------------------------------
    async def run(self, max_groups: int | None = None) -> dict[str, Any]:
        self._stop.clear()
        width = max(1, self.cfg.rollout.concurrency // self.cfg.rollout.group_size)
        tasks: set[asyncio.Task] = set()
        while not self._stop.is_set() and (max_groups is None or self.started < max_groups):
            if len(tasks) < width and self.started < await self._capacity():
                tasks.add(asyncio.create_task(self._produce(self._next_group())))
                continue
            if tasks:
                done, tasks = await asyncio.wait(tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
            else:
                await asyncio.sleep(0.2)  # at capacity: wait for the trainer to advance
        if tasks:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.stats()

    async def generate_groups(self, num_groups: int) -> dict[str, Any]:
        version = await asyncio.to_thread(self.buffer.policy_version)
        resumed = [g for g in self.partials if self._fresh(g, version)]
        self.store.dropped += sum(len(g.partials) for g in self.partials if g not in resumed)
        self.partials = []
        want = math.ceil(num_groups * self.cfg.rollout.over_provision)
        pending = resumed + [self._next_group() for _ in range(max(0, want - len(resumed)))]
        tasks = {asyncio.create_task(self._run_group(g)): g for g in pending}
        waiting, pushed = set(tasks), 0
        while pushed < num_groups and waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                pushed += await self._settle(t.result(), tasks[t], pushed < num_groups)
        # the long tail: abort it and keep what it generated, to resume first next time
        tail = list(waiting)
        await asyncio.gather(*(self.router.abort(tasks[t].group_id) for t in tail))
        for t, res in zip(tail, await asyncio.gather(*tail)):
            pushed += await self._settle(res, tasks[t], pushed < num_groups)
        return self.stats()

    async def _settle(self, result: TrajectoryGroup | None, g: PendingGroup, room: bool) -> int:
        """Push a finished group if this step still needs one; otherwise keep it (whole, or its partials)."""
        if result is not None and room:
            await self._push(result)
            return 1
        if result is not None:
            g.done = list(result.trajectories)
        elif not self.cfg.rollout.partial_rollouts:
            self.store.dropped += len(g.partials)  # partial rollouts off: the long tail is discarded
            return 0
        self.partials.append(g)
        return 0

    async def evaluate(self, samples: list[dict[str, Any]], greedy: bool = True) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.cfg.rollout.concurrency)

        async def one(i: int, s: dict[str, Any]) -> Trajectory:
            async with sem:
                out = await self.runner.run(s, f"eval-{uuid.uuid4().hex[:8]}", i, greedy=greedy)
                return out if isinstance(out, Trajectory) else None

        trajs = [t for t in await asyncio.gather(*(one(i, s) for i, s in enumerate(samples))) if t is not None]
        rewards = [t.reward for t in trajs]
        return {"reward_mean": sum(rewards) / len(rewards) if rewards else 0.0, "samples": len(rewards),
                "failed": sum(t.status.value == "failed" for t in trajs)}

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict[str, Any]:
        active = self.active_s + (time.monotonic() - self._active_since if self._active_since else 0.0)
        return {"worker": self.index, "started": self.started, "pushed": self.pushed, "tokens": self.tokens,
                "failed": self.failed, "aborted": self.aborted, "active_s": active,
                "tokens_per_s": self.tokens / active if active else 0.0, "partials": len(self.partials),
                "partials_dropped": self.store.dropped}

    # --- internals --------------------------------------------------------------------------------------
    async def _capacity(self) -> int:
        v = min(await asyncio.to_thread(self.buffer.policy_version), await self._engine_version())
        total = (v + self.cfg.loss.staleness_tau + 1) * self.cfg.rollout.groups_per_step
        n = self.cfg.rollout.num_workers
        return total // n + (1 if self.index < total % n else 0)

    async def _engine_version(self) -> int:
        """The oldest policy version among the healthy engines (what new tokens will be sampled with)."""
        try:
            versions = await asyncio.gather(*(self.router.clients[u].weight_version() for u in self.router.healthy))
            self.engine_version = min(versions, default=self.engine_version)
        except Exception:  # an engine restarting: keep the last known version
            pass
        return self.engine_version

    def _next_group(self) -> PendingGroup:
        i = self._cursor % len(self.dataset)
        self._cursor += self.cfg.rollout.num_workers  # workers stride through the dataset without overlap
        self.started += 1
        return PendingGroup(self.dataset[i], uuid.uuid4().hex, i)

    def _fresh(self, g: PendingGroup, version: int) -> bool:
        firsts = [p.first_version() for p in g.partials if p.first_version() is not None]
        firsts += [t.first_version for t in g.done]
        return not firsts or version - min(firsts) <= self.cfg.loss.staleness_tau

    async def _produce(self, g: PendingGroup) -> None:
        group = await self._run_group(g)
        if group is not None:
            await self._push(group)

    async def _run_group(self, g: PendingGroup) -> TrajectoryGroup | None:
        if not g.partials and len(g.done) == self.cfg.rollout.group_size:  # finished earlier, kept for now
            return TrajectoryGroup(group_id=g.group_id, prompt_index=g.prompt_index, trajectories=g.done)
        self._enter()
        try:
            todo = [(p.sample_index, p) for p in g.partials] or [
                (i, None) for i in range(len(g.done), self.cfg.rollout.group_size)]
            g.partials = []
            outs = await asyncio.gather(*(self.runner.run(g.sample, g.group_id, i, resume=p) for i, p in todo))
        finally:
            self._leave()
        for out in outs:
            if isinstance(out, Partial):
                g.partials.append(out)
            else:
                g.done.append(out)
        if g.partials:
            self.aborted += len(g.partials)
            return None
        return TrajectoryGroup(group_id=g.group_id, prompt_index=g.prompt_index,
                               trajectories=sorted(g.done, key=lambda t: t.sample_index))

    async def _push(self, group: TrajectoryGroup) -> None:
        started = time.time()
        await asyncio.to_thread(self.buffer.put, group)
        tokens = sum(sum(t.loss_mask) for t in group.trajectories)
        self.tokens += tokens
        self.pushed += 1
        self.failed += sum(t.status.value == "failed" for t in group.trajectories)
        gen = max(t.timing.get("end", started) for t in group.trajectories) - min(
            t.timing.get("start", started) for t in group.trajectories)
        rewards = [t.reward for t in group.trajectories]
        await asyncio.to_thread(self.metrics.log, "rollout", {
            "engine": ",".join(sorted(self.router.healthy)), "tokens": tokens, "dt_s": gen,
            "tokens_per_s": tokens / gen if gen else 0.0, "trajectories": len(group.trajectories), "groups": 1,
            "reward_mean": sum(rewards) / len(rewards), "aborted": self.aborted, "failed": self.failed,
            "response_len_mean": tokens / len(group.trajectories)})
        t = group.trajectories[0]
        await asyncio.to_thread(self.metrics.log, "trajectory", {
            "id": t.id, "group_id": t.group_id, "env": t.env_name, "status": t.status.value, "reward": t.reward,
            "length": len(t.response_ids), "text": self.tokenizer.decode(t.response_ids),
            "prompt_ids": t.prompt_ids, "response_ids": t.response_ids, "loss_mask": t.loss_mask,
            "versions": t.versions})

    def _enter(self) -> None:
        if self._inflight == 0:
            self._active_since = time.monotonic()
        self._inflight += 1

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0 and self._active_since is not None:
            self.active_s += time.monotonic() - self._active_since
            self._active_since = None


RolloutWorker = ray.remote(RolloutWorkerCore)
