"""One optimizer step over a list of groups: staleness filter -> advantages -> pack -> logprobs -> loss ->
backward (accumulated over micro-batches, normalised over all loss tokens of the step) -> optimizer step."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from slime_rl.config import RunConfig
from slime_rl.trajectory import Trajectory, TrajectoryGroup

from .advantages import compute_advantages
from .losses import NEEDS_OLD_LOGP, LossInputs, policy_loss
from .packing import PackedBatch, pack, padding_waste
from .staleness import StalenessFilter, StalenessReport


@dataclass
class _TokenView:
    """Where each trained token sits inside a packed batch, with its rollout logprob and advantage."""
    positions: torch.Tensor
    logp_rollout: torch.Tensor
    advantages: torch.Tensor


def _token_view(batch: PackedBatch, trajs: list[Trajectory], advs: list[float]) -> _TokenView:
    pos, lp, adv = [], [], []
    for slot, i in enumerate(batch.items):
        t = trajs[i]
        start = int(batch.cu_seqlens[slot]) + len(t.prompt_ids) - 1  # logits at t-1 predict token t
        for j, m in enumerate(t.loss_mask):
            if m:
                pos.append(start + j)
                lp.append(t.rollout_logprobs[j])
                adv.append(advs[i])
    return _TokenView(torch.tensor(pos, dtype=torch.long), torch.tensor(lp, dtype=torch.float32),
                      torch.tensor(adv, dtype=torch.float32))


def select_trainable(groups: list[TrajectoryGroup], version: int, cfg: RunConfig
                     ) -> tuple[list[Trajectory], list[float], StalenessReport]:
    report = StalenessFilter(cfg.loss.staleness_tau).apply(groups, version)
    rewards = [[t.reward for t in g.trajectories] for g in report.kept_groups]
    trajs = [t for g in report.kept_groups for t in g.trajectories]
    advs = [a for group_adv in compute_advantages(rewards, cfg.loss) for a in group_adv]
    return trajs, advs, report


def train_step(policy, groups: list[TrajectoryGroup], version: int, cfg: RunConfig) -> dict:
    started = time.perf_counter()
    trajs, advs, report = select_trainable(groups, version, cfg)
    metrics: dict = {"kept": report.kept, "padded": report.padded, "dropped_stale": report.dropped_stale,
                     "dropped_invalid": report.dropped_invalid, "dropped_groups": len(report.dropped_groups),
                     "staleness_hist": {str(k): v for k, v in sorted(report.lag_hist.items())},
                     "reward_mean": _mean([t.reward for g in groups for t in g.trajectories]), "stepped": False}
    if not trajs:
        return metrics
    budget = cfg.trainer.micro_batch_tokens
    batches = pack(trajs, budget)
    views = [_token_view(b, trajs, advs) for b in batches]
    n_loss_tokens = sum(len(v.positions) for v in views)
    old = None
    if cfg.loss.kind in NEEDS_OLD_LOGP:
        with torch.no_grad():
            old = [policy.forward_logprobs(b.tokens, b.position_ids, b.cu_seqlens)[0, v.positions]
                   for b, v in zip(batches, views)]
    sums = {"loss": 0.0, "masked_frac": 0.0, "clip_frac": 0.0, "logp_diff_mean": 0.0, "kl": 0.0}
    for k, (b, v) in enumerate(zip(batches, views)):
        if len(v.positions) == 0:
            continue
        logp = policy.forward_logprobs(b.tokens, b.position_ids, b.cu_seqlens)[0, v.positions]
        loss, m = policy_loss(LossInputs(logp, v.logp_rollout, v.advantages, old[k] if old else None,
                                         normalizer=n_loss_tokens), cfg.loss)
        loss.backward()
        share = len(v.positions) / n_loss_tokens
        sums["loss"] += loss.item()
        for key in ("masked_frac", "clip_frac", "logp_diff_mean", "kl"):
            sums[key] += m[key] * share
    metrics.update(sums)
    metrics.update(policy.optimizer_step())
    elapsed = time.perf_counter() - started
    tokens = sum(b.num_tokens for b in batches)
    metrics.update({"stepped": True, "tokens": tokens, "loss_tokens": n_loss_tokens, "micro_batches": len(batches),
                    "padding_waste": padding_waste(batches, budget), "step_time_s": elapsed,
                    "tokens_per_s": tokens / elapsed})
    return metrics


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
