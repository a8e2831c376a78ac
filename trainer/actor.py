"""The trainer as a Ray actor: read a step's groups from the buffer, train, advance the version, commit.

Commit = acknowledge the buffer entries. With periodic checkpoints (trainer.checkpoint_every = K), entries stay
pending until the checkpoint that contains their update is on disk; the checkpoint records their ids. A trainer
killed at any point resumes from the last checkpoint, acknowledges what that checkpoint recorded (in case it died
between saving and acknowledging), and re-reads its own pending entries: every trajectory ends up in the weights
exactly once. With K = 0 (no checkpoints) entries are acknowledged right after each optimizer step."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import ray
import torch

from slime_rl.buffer import TrajectoryBuffer
from slime_rl.config import RunConfig
from slime_rl.metrics import MetricsSink
from slime_rl.net import write_pid

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .parallel import init_parallel
from .train_step import train_step


class TrainerCore:
    def __init__(self, cfg: RunConfig, redis_url: str, run_dir: str, consumer: str = "trainer-0",
                 resume: bool = False):
        from .policy import MegatronPolicy

        self.cfg, self.run_dir = cfg, Path(run_dir)
        write_pid(self.run_dir, consumer)
        torch.set_num_threads(cfg.trainer.threads or os.cpu_count() or 1)
        torch.manual_seed(cfg.trainer.seed)
        init_parallel(cfg.trainer.parallel.tensor, cfg.trainer.parallel.pipeline, seed=cfg.trainer.seed)
        dtype = getattr(torch, cfg.model.dtype)
        self.policy = MegatronPolicy.from_hf(cfg.model.path, cfg.trainer, dtype=dtype)
        self.buffer = TrajectoryBuffer(cfg.buffer, redis_url, consumer=consumer)
        self.metrics = MetricsSink(consumer, redis_url, run_dir)
        self._step, self._version = 0, 0
        self.uncommitted: list = []  # buffer entries trained into the weights but not yet checkpointed
        self.ckpt_root = self.run_dir / "checkpoints"
        self.audit = self.run_dir / "trained_ids.jsonl"
        if resume and (ckpt := latest_checkpoint(self.ckpt_root)) is not None:
            meta = load_checkpoint(self.policy, ckpt)
            self._step, self._version = meta["step"], meta["version"]
            extra = meta.get("extra", {})
            self.buffer.ack_ids(extra.get("entry_ids", []), extra.get("trajectory_ids", []))
        self.buffer.set_policy_version(self._version)

    def step(self) -> int:
        return self._step

    def version(self) -> int:
        return self._version

    def train_step(self, timeout_s: float = 600.0) -> dict[str, Any] | None:
        want = self.cfg.rollout.groups_per_step
        entries, deadline = [], time.monotonic() + timeout_s
        while len(entries) < want and time.monotonic() < deadline:
            entries += self.buffer.read(want - len(entries), block_ms=500)
        if not entries:
            return None
        groups = [e.group for e in entries]
        m = train_step(self.policy, groups, self._version, self.cfg)
        self.uncommitted += entries
        if m["stepped"]:
            self._step += 1
            self._version += 1
        every = self.cfg.trainer.checkpoint_every
        if not every:
            self._commit()
        elif m["stepped"] and self._step % every == 0:
            m["checkpoint"] = str(self.save_checkpoint())
        self.buffer.set_policy_version(self._version)
        m.update(step=self._step, version=self._version, groups=len(groups),
                 trained_ids=[t.id for g in groups for t in g.trajectories])
        self.metrics.log("trainer", {k: v for k, v in m.items() if k != "trained_ids"}, step=self._step)
        self.metrics.log("buffer", vars(self.buffer.stats()), step=self._step)
        return m

    def save_checkpoint(self) -> Path:
        """Checkpoint, then commit everything the checkpoint contains."""
        extra = {"entry_ids": [e.entry_id for e in self.uncommitted],
                 "trajectory_ids": [t.id for e in self.uncommitted for t in e.group.trajectories]}
        path = save_checkpoint(self.policy, self.ckpt_root, self._step, self._version, extra)
        self._commit()
        return path

    def _commit(self) -> None:
        if not self.uncommitted:
            return
        self.buffer.ack(self.uncommitted)
        line = json.dumps({"step": self._step, "version": self._version,
                           "ids": [t.id for e in self.uncommitted for t in e.group.trajectories]})
        with open(self.audit, "a") as f:  # what went into the committed weights, for audits and tests
            f.write(line + "\n")
        self.uncommitted = []

    def export_weights(self) -> dict[str, torch.Tensor]:
        return self.policy.export_hf_state_dict()

    def publish_weights(self, publisher) -> dict[str, Any]:
        """Hand this version to the relay once and return; the relay fans it out to the engines."""
        receipt = publisher.publish(self._version, self.policy.export_hf_state_dict())
        if self.cfg.trainer.reset_optimizer_on_push:
            self.policy.reset_optimizer_state()
        return receipt


TrainerActor = ray.remote(TrainerCore)
