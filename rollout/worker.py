"""Rollout workers: run groups of episodes against the engines and push whole groups to the buffer.

async mode (`run`): keep producing; a group starts only while the run's staleness rule admits it
(slime_rl/staleness.py: its share of (v + tau + 1) * groups_per_step started groups, v = the version the engines
hold, never ahead of the trainer's). A request an engine aborts (e.g. a weight swap in abort mode) is resumed at
once from its tokens.
sync mode (`generate_groups`): start over_provision x the needed groups, push the first ones to finish, abort
the long tail and keep those partials to resume first next time (or drop them when partial_rollouts is off).
Each worker's place in its prompts (progress.PromptProgress) is stored with its pushes, so a restarted worker
redoes only the groups that were in flight.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from slime_rl.buffer import TrajectoryBuffer
from slime_rl.config import RunConfig
from slime_rl.env_api import build_env_factory, load_env_class
from slime_rl.metrics import MetricsSink
from slime_rl.net import write_pid
from slime_rl.results import EvalResult
from slime_rl.run_keys import RunKeys
from slime_rl.staleness import PolicyVersion, StalenessRule
from slime_rl.trajectory import Status, Trajectory, TrajectoryGroup

from .dataset import PromptDataset, load_prompts
from .episode import EpisodeRunner
from .partial import Partial, PartialStore, PendingGroup
from .progress import PromptProgress
from .router import Router


class RolloutWorkerCore:
    def __init__(
        self, cfg: RunConfig, engine_urls: list[str], redis_url: str, worker_index: int = 0, run_dir: str | None = None
    ):
        from transformers import AutoTokenizer

        self.cfg, self.index, self.rc = cfg, worker_index, cfg.rollout
        if run_dir:
            write_pid(run_dir, f"rollout-{worker_index}")
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        env_plugin = load_env_class(cfg.env.name)
        rows = load_prompts(env_plugin, cfg.env.dataset, "train", cfg.env.dataset_kwargs)
        # one per worker, for all its episodes; a typo in env.kwargs fails here, at start-up
        self.envs = build_env_factory(env_plugin, cfg.env.kwargs)
        self._envs_closed = False
        self.dataset = PromptDataset(
            rows, worker_index, self.rc.num_workers, self.rc.shuffle, self.rc.seed, name=f"{cfg.env.name} train"
        )
        self.router = Router(
            engine_urls,
            timeout=cfg.engines.request_timeout_s,
            health_interval_s=self.rc.health_interval_s,
            repack_below=self.rc.repack_below,
        )
        self.runner = EpisodeRunner(self.envs, cfg.env, self.rc.sampling, self.tokenizer, self.router)
        keys = RunKeys.of(cfg)
        self.buffer = TrajectoryBuffer(cfg.buffer, redis_url, consumer=f"rollout-{worker_index}", keys=keys)
        self.metrics = MetricsSink(f"rollout-{worker_index}", redis_url, run_dir, keys=keys)
        self.staleness = StalenessRule.of(cfg)
        self.policy_version = PolicyVersion(self.buffer.r, keys)  # the trainer's, as it publishes it
        self.store = PartialStore(self.staleness)
        self._stopping = False
        self.started = self.pushed = self.tokens = self.failed = self.aborted = 0
        # this worker's place in its prompts, stored with each push and restored here; the evaluation worker (an
        # index beyond num_workers) pushes nothing and keeps none
        self._progress_field = str(worker_index) if worker_index < self.rc.num_workers else None
        saved = self.buffer.progress(self._progress_field) if self._progress_field else None
        self.progress = PromptProgress.from_wire(saved) if saved else PromptProgress()
        self.started = self.progress.finished  # a restarted worker goes on with the run's capacity count
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="buffer-writer")  # states reach Redis in order
        self._aborted_logged = 0
        self.active_s = 0.0
        self._active_since: float | None = None
        self._inflight = 0
        self.engine_version = 0  # oldest version held by the engines, as last asked
        # for a run that cannot make progress: why episodes ended untrainable, and whether this worker is waiting
        self.episodes = 0
        self.failures: Counter[str] = Counter()
        self.groups_in_flight = 0
        self.at_capacity = False

    # --- public API -------------------------------------------------------------------------------------
    async def run(self, max_groups: int | None = None) -> dict[str, Any]:
        """Produce groups until stop() (or max_groups started and finished)."""
        self._stopping = False
        self.router.start()
        width = max(1, self.rc.concurrency // self.rc.group_size)
        tasks: dict[asyncio.Task, PendingGroup] = {}
        while not self._stopping and (max_groups is None or self.started < max_groups):
            self.groups_in_flight = len(tasks)
            self.at_capacity = self.started >= await self._capacity()
            if len(tasks) < width and not self.at_capacity:
                g = self._new_group()
                tasks[asyncio.create_task(self._produce(g))] = g
                continue
            await self._reap(tasks, timeout=0.5 if tasks else None)
        cut = {g.group_id for g in tasks.values()} if self._stopping else set()
        self.runner.aborting |= cut  # stopping: cut the in-flight requests short on the engines; keep nothing
        await asyncio.gather(*(self.router.abort_prefix(gid) for gid in cut))
        while tasks:
            await self._reap(tasks, timeout=None)
        self.runner.aborting -= cut
        return self.stats()

    async def generate_groups(self, num_groups: int) -> dict[str, Any]:
        """Push exactly num_groups groups: over-provision, then abort the long tail and keep it for later."""
        self._stopping = False
        self.router.start()
        version = await asyncio.to_thread(self.policy_version.get)
        want = max(num_groups, math.ceil(num_groups * self.rc.over_provision))
        stale = [g for g in self.store.waiting if self.staleness.is_stale(g.first_version(), version)]
        pending = self.store.take(version, limit=want)  # drops the stale ones: their prompts are used up
        for g in stale:
            await self._finish(g.slot)
        pending += [self._new_group() for _ in range(want - len(pending))]
        tasks = {asyncio.create_task(self._run_group(g)): g for g in pending}
        waiting, pushed = set(tasks), 0
        while pushed < num_groups and waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                pushed += await self._settle(t.result(), tasks[t], room=pushed < num_groups)
        # the long tail: abort it on the engines; what it generated is kept and resumed first next time
        tail = {tasks[t].group_id for t in waiting}
        self.runner.aborting |= tail
        await asyncio.gather(*(self.router.abort_prefix(gid) for gid in tail))
        for t in waiting:
            pushed += await self._settle(await t, tasks[t], room=pushed < num_groups)
        self.runner.aborting -= tail
        return self.stats()

    async def evaluate(self, samples: list[dict[str, Any]], greedy: bool = True) -> EvalResult:
        """Held-out evaluation: one episode per sample, nothing pushed to the buffer."""
        sem = asyncio.Semaphore(self.rc.concurrency)

        async def one(i: int, s: dict[str, Any]) -> Trajectory:
            async with sem:
                return await self._to_the_end(s, f"eval-{uuid.uuid4().hex[:12]}", i, greedy)

        trajs = await asyncio.gather(*(one(i, s) for i, s in enumerate(samples)))
        rewards = [t.reward for t in trajs]
        lengths = [sum(t.loss_mask) for t in trajs]
        failures = Counter(t.untrainable_reason for t in trajs if t.status == Status.FAILED)
        return EvalResult(
            reward_mean=sum(rewards) / len(rewards) if rewards else 0.0,
            samples=len(rewards),
            failed=sum(failures.values()),
            failure_reasons=dict(failures.most_common(10)),
            response_len_mean=sum(lengths) / len(lengths) if lengths else 0.0,
        )

    def stop(self) -> None:
        self._stopping = True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Release the environment's shared resources (a judge's sandbox pool), once; the run calls this after
        stop() and before it kills the worker, since a killed actor cleans nothing up."""
        if self._envs_closed:
            return
        self._envs_closed, self._stopping = True, True
        deadline = time.monotonic() + timeout_s
        while self._inflight and time.monotonic() < deadline:  # the episodes stop() cut short end first
            await asyncio.sleep(0.05)
        await asyncio.wait_for(self.envs.close(), max(1.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, Any]:
        active = self.active_s + (time.monotonic() - self._active_since if self._active_since else 0.0)
        return {
            "worker": self.index,
            "started": self.started,
            "pushed": self.pushed,
            "tokens": self.tokens,
            "failed": self.failed,
            "aborted": self.aborted,
            "active_s": active,
            "tokens_per_s": self.tokens / active if active else 0.0,
            "partials": self.store.num_partials(),
            "waiting_groups": len(self.store),
            "resumed": self.store.resumed,
            "partials_dropped": self.store.dropped_samples,
            "repacked": self.router.repacked,
            "engines": self.router.load(),
            "episodes": self.episodes,
            "failure_reasons": dict(self.failures.most_common(10)),
            "groups_in_flight": self.groups_in_flight,
            "at_capacity": self.at_capacity,
        }

    # --- internals --------------------------------------------------------------------------------------
    async def _capacity(self) -> int:
        """How many groups this worker may have started: the engines' version, never ahead of the trainer's."""
        v = min(await asyncio.to_thread(self.policy_version.get), await self._engine_version())
        return self.staleness.capacity(v, self.index)

    async def _engine_version(self) -> int:
        """The oldest policy version among the healthy engines (what new tokens will be sampled with)."""
        try:
            versions = await asyncio.gather(*(self.router.clients[u].weight_version() for u in self.router.healthy))
            self.engine_version = min(versions, default=self.engine_version)
        except Exception:  # an engine restarting: keep the last known version
            pass
        return self.engine_version

    def _new_group(self) -> PendingGroup:
        slot = self.progress.next_slot()
        i, row = self.dataset.at(slot)
        self.started += 1
        return PendingGroup(row, uuid.uuid4().hex, i, slot=slot)

    def _give_back(self, g: PendingGroup) -> None:
        """A group cut short by stop(): its prompt is run again first, as if it had never started."""
        self.progress.give_back(g.slot)
        self.started -= 1

    async def _finish(self, slot: int, group: TrajectoryGroup | None = None) -> None:
        """The prompt in `slot` is used up: store the new progress with the group's XADD when it is pushed, alone
        when the group was dropped on purpose (stale, or its tail discarded), as a run that never stopped would
        skip it too."""
        self.progress.finish(slot)
        progress = (self._progress_field, self.progress.to_wire()) if self._progress_field else None
        loop = asyncio.get_running_loop()
        if group is not None:
            await loop.run_in_executor(self._writer, lambda: self.buffer.put(group, progress=progress))
        elif progress is not None:
            await loop.run_in_executor(self._writer, self.buffer.save_progress, *progress)

    async def _reap(self, tasks: dict[asyncio.Task, PendingGroup], timeout: float | None) -> None:
        if not tasks:
            await asyncio.sleep(0.2)  # at capacity: wait for the trainer to advance
            return
        done, _ = await asyncio.wait(set(tasks), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            tasks.pop(t)
            t.result()  # a bug in the worker itself must surface, not stall the run

    async def _produce(self, g: PendingGroup) -> None:
        """async mode: run a group to the end, resuming what engines abort, and push it."""
        for attempt in range(1, 1_000_000):
            group = await self._run_group(g)
            if group is not None:
                await self._push(group, g.slot)
                return
            version = await asyncio.to_thread(self.policy_version.get)
            if self._stopping or not self.rc.partial_rollouts or self.staleness.is_stale(g.first_version(), version):
                self.store.dropped_samples += len(g.partials) + len(g.done)
                if self._stopping:
                    self._give_back(g)
                else:
                    await self._finish(g.slot)
                return
            self.store.resumed += len(g.partials)
            await asyncio.sleep(min(0.1 * attempt, 2.0))  # a paused engine aborts at once: do not spin on it

    async def _settle(self, result: TrajectoryGroup | None, g: PendingGroup, room: bool) -> int:
        """sync mode: push a finished group if this step still needs one; otherwise keep it for the next step."""
        if result is not None and room:
            await self._push(result, g.slot)
            return 1
        if result is None and not self.rc.partial_rollouts:
            self.store.dropped_samples += len(g.partials) + len(g.done)  # the long tail is discarded
            await self._finish(g.slot)
            return 0
        self.store.put(g)
        return 0

    async def _run_group(self, g: PendingGroup) -> TrajectoryGroup | None:
        """Run everything the group still needs; the finished group, or None when some samples were aborted."""
        if not g.is_complete(self.rc.group_size):
            todo = g.todo(self.rc.group_size)
            g.partials = []
            self._enter()
            try:
                outs = await asyncio.gather(*(self.runner.run(g.sample, g.group_id, i, resume=p) for i, p in todo))
            finally:
                self._leave()
            for out in outs:
                (g.partials if isinstance(out, Partial) else g.done).append(out)
                if isinstance(out, Trajectory):
                    self.episodes += 1
                    if not out.trainable:
                        self.failures[out.untrainable_reason] += 1
            if g.partials:
                self.aborted += len(g.partials)
                return None
        return TrajectoryGroup(
            group_id=g.group_id, prompt_index=g.prompt_index, trajectories=sorted(g.done, key=lambda t: t.sample_index)
        )

    async def _to_the_end(self, sample: dict[str, Any], gid: str, i: int, greedy: bool) -> Trajectory:
        out = await self.runner.run(sample, gid, i, greedy=greedy)
        while isinstance(out, Partial):  # aborted by a weight swap: continue from its tokens
            out = await self.runner.run(sample, gid, i, greedy=greedy, resume=out)
        return out

    async def _push(self, group: TrajectoryGroup, slot: int) -> None:
        await self._finish(slot, group)
        trajs = group.trajectories
        tokens = sum(sum(t.loss_mask) for t in trajs)
        failed = sum(t.status == Status.FAILED for t in trajs)
        self.tokens += tokens
        self.pushed += 1
        self.failed += failed
        now = time.time()
        dt = max(t.timing.get("end", now) for t in trajs) - min(t.timing.get("start", now) for t in trajs)
        engines = Counter(t.metadata.get("engine", "?") for t in trajs)
        aborted, self._aborted_logged = self.aborted - self._aborted_logged, self.aborted
        await asyncio.to_thread(
            self.metrics.log,
            "rollout",
            {
                "engine": engines.most_common(1)[0][0],
                "tokens": tokens,
                "dt_s": dt,
                "tokens_per_s": tokens / dt if dt > 0 else 0.0,
                "trajectories": len(trajs),
                "groups": 1,
                "reward_mean": sum(t.reward for t in trajs) / len(trajs),
                "response_len_mean": tokens / len(trajs),
                "aborted": aborted,
                "failed": failed,
            },
        )
        if self.pushed % self.rc.trajectory_log_every == 0:
            t = trajs[0]
            await asyncio.to_thread(
                self.metrics.log,
                "trajectory",
                {
                    "id": t.id,
                    "group_id": t.group_id,
                    "env": t.env_name,
                    "status": t.status.value,
                    "reward": t.reward,
                    "length": len(t.response_ids),
                    "text": self.tokenizer.decode(t.response_ids),
                    "prompt_ids": t.prompt_ids,
                    "response_ids": t.response_ids,
                    "loss_mask": t.loss_mask,
                    "versions": t.versions,
                    "reason": t.metadata.get("reason"),
                },
            )

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
