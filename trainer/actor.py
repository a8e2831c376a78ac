"""The trainer as a Ray actor: read a step's groups from the buffer, train, advance the version, commit.

Commit = acknowledge the buffer entries, only after the optimizer step that used them. With periodic checkpoints
(trainer.checkpoint_every = K) entries stay pending until the checkpoint that contains their update is on disk;
the checkpoint records their ids. A trainer killed at any point resumes from the last checkpoint, acknowledges
what that checkpoint recorded (in case it died between saving and acknowledging), and re-reads its own pending
entries (same consumer name): every trajectory ends up in the weights exactly once. With K = 0 (no checkpoints)
entries are acknowledged right after each optimizer step. Entries whose groups the staleness filter dropped are
acknowledged with the rest: they were consumed, not lost.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ray
import torch

from slime_rl.buffer import BufferEntry, TrajectoryBuffer
from slime_rl.children import die_with_parent_on_fork
from slime_rl.config import RunConfig
from slime_rl.metrics import MetricsSink
from slime_rl.net import free_port, write_pid
from slime_rl.results import PushReceipt, StepState, TrainStepResult
from slime_rl.run_keys import RunKeys
from slime_rl.staleness import PolicyVersion

from .checkpoint import latest_checkpoint
from .parallel import init_parallel
from .train_step import train_step


class TrainerCore:
    def __init__(self, cfg: RunConfig, redis_url: str, run_dir: str, consumer: str = "trainer-0", resume: bool = False):
        from .policy import MegatronPolicy

        self.cfg, self.run_dir, self.consumer = cfg, Path(run_dir), consumer
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_pid(self.run_dir, consumer)
        die_with_parent_on_fork()  # checkpoint writers forked from here must not outlive a killed trainer
        torch.set_num_threads(cfg.trainer.threads or os.cpu_count() or 1)
        torch.manual_seed(cfg.trainer.seed)
        p = cfg.trainer.parallel
        if p.tensor * p.pipeline * p.data != 1:
            raise ValueError(
                "TrainerCore runs one process: trainer.parallel must be 1 x 1 x 1 (multi-rank training "
                "goes through trainer.parallel.init_parallel in each rank)"
            )
        # a port of our own: MASTER_PORT inherited from a parent process may be that process's (taken) store
        init_parallel(seed=cfg.trainer.seed, master_port=free_port())
        dtype = getattr(torch, cfg.model.dtype)
        self.policy = MegatronPolicy.from_hf(cfg.model.path, cfg.trainer, dtype=dtype)
        # the KL reference is the starting weights, frozen (never stepped)
        self.reference = MegatronPolicy.from_hf(cfg.model.path, cfg.trainer, dtype=dtype) if cfg.loss.kl_coef else None
        keys = RunKeys.of(cfg)
        self.buffer = TrajectoryBuffer(cfg.buffer, redis_url, consumer=consumer, keys=keys)
        self.metrics = MetricsSink(consumer, redis_url, run_dir, keys=keys)
        self._step, self._version = 0, 0
        self.uncommitted: list[BufferEntry] = []  # trained into the weights, not yet acknowledged
        self._held: list[BufferEntry] = []  # read, waiting for the rest of a step's groups
        self._publisher_thread = ThreadPoolExecutor(1, thread_name_prefix="weight-publisher")
        self._publication: Future | None = None  # the background weight publication in flight
        self.ckpt_root = self.run_dir / "checkpoints"
        self.audit = self.run_dir / "trained_ids.jsonl"
        if resume and latest_checkpoint(self.ckpt_root) is not None:
            meta = self.policy.load_checkpoint(self.ckpt_root)
            self._step, self._version = meta["step"], meta["version"]
            extra = meta.get("extra", {})
            self.buffer.ack_ids(extra.get("entry_ids", []), extra.get("trajectory_ids", []))
        self.policy_version = PolicyVersion(self.buffer.r, keys)  # this trainer is its one writer
        self.policy_version.set(self._version)

    def step(self) -> int:
        return self._step

    def version(self) -> int:
        return self._version

    def _read(self, want: int, timeout_s: float) -> list[BufferEntry]:
        entries: list[BufferEntry] = []
        deadline = time.monotonic() + timeout_s
        while len(entries) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            entries += self.buffer.read(want - len(entries), block_ms=max(1, int(min(left, 0.5) * 1000)))
        return entries

    def train_step(self, timeout_s: float = 600.0) -> TrainStepResult:
        """Train on the next groups_per_step groups. Waits up to timeout_s for them; if fewer came, the result is
        `no_data_yet` and they are held for the next call (read but not acknowledged: a crash leaves them pending
        in the buffer), so a caller polling with short timeouts never trains on a partial batch."""
        want = self.cfg.rollout.groups_per_step
        self._held += self._read(want - len(self._held), timeout_s)
        if len(self._held) < want:
            return TrainStepResult(state=StepState.NO_DATA_YET, step=self._step, version=self._version)
        entries, self._held = self._held, []
        groups = [e.group for e in entries]
        report = train_step(self.policy, groups, self._version, self.cfg, reference=self.reference)
        self.uncommitted += entries
        trained = report.update is not None
        if trained:
            self._step += 1
            self._version += 1
        every = self.cfg.trainer.checkpoint_every
        checkpoint = None
        if not every:
            self._commit()
        elif trained and self._step % every == 0:
            checkpoint = self.save_checkpoint()
        self.policy_version.set(self._version)
        kept = set(report.kept_ids)
        result = TrainStepResult(
            state=StepState.TRAINED if trained else StepState.NOTHING_TRAINABLE,
            step=self._step,
            version=self._version,
            batch=report.batch,
            update=report.update,
            checkpoint=checkpoint,
            trained_ids=[t.id for g in groups for t in g.trajectories if t.id in kept],
            dropped_ids=[t.id for g in groups for t in g.trajectories if t.id not in kept],
        )
        self.metrics.log("trainer", result.record(), step=self._step)
        self.metrics.log("buffer", vars(self.buffer.stats()), step=self._step)
        return result

    def save_checkpoint(self) -> str:
        """Checkpoint, then commit everything the checkpoint contains."""
        extra = {
            "entry_ids": [e.entry_id for e in self.uncommitted],
            "trajectory_ids": [t.id for e in self.uncommitted for t in e.group.trajectories],
        }
        path = self.policy.save_checkpoint(self.ckpt_root, self._step, self._version, extra)
        self._commit()
        return str(path)

    def _commit(self) -> None:
        if not self.uncommitted:
            return
        self.buffer.ack(self.uncommitted)
        # prompts: the dataset row of each consumed group, in the order the trainer read them
        line = json.dumps(
            {
                "step": self._step,
                "version": self._version,
                "ids": [t.id for e in self.uncommitted for t in e.group.trajectories],
                "prompts": [e.group.prompt_index for e in self.uncommitted],
            }
        )
        with open(self.audit, "a") as f:  # what the committed weights consumed, for audits and tests
            f.write(line + "\n")
        self.uncommitted = []

    def export_weights(self) -> dict[str, torch.Tensor]:
        """The current weights under Hugging Face names (for the relay)."""
        return self.policy.export_hf_state_dict()

    def notify_weights_pushed(self) -> None:
        """Called after each weight push: resets the optimizer state when trainer.reset_optimizer_on_push."""
        if self.cfg.trainer.reset_optimizer_on_push:
            self.policy.reset_optimizer_state()

    def publish_weights(self, publisher, background: bool = False) -> PushReceipt:
        """Hand this version to the relay once and return; the relay fans it out to the engines.
        background: take a copy of the weights and return; serialising and handing the copy to the relay (about
        half a second for a 0.5 GB model on 2 cores) runs on a thread while the next step trains. One publication is
        in flight at a time: the previous one is finished first, its receipt returned as `previous` and its error
        raised.
        blocked_s is the trainer's wait either way."""
        started = time.perf_counter()
        previous = self.finish_publication()
        if background:
            weights, version = self.export_weights(), self._version
            self._publication = self._publisher_thread.submit(publisher.publish, version, weights)
            receipt = PushReceipt(version=version, background=True)
        else:
            receipt = publisher.publish(self._version, self.export_weights())
        receipt.blocked_s = time.perf_counter() - started
        receipt.previous = previous
        self.notify_weights_pushed()
        return receipt

    def finish_publication(self) -> PushReceipt | None:
        """Wait for the background publication in flight (if any); its receipt, or its error raised here."""
        pending, self._publication = self._publication, None
        return pending.result() if pending is not None else None


TrainerActor = ray.remote(TrainerCore)
