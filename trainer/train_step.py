"""One optimizer step over a list of groups:
staleness filter -> advantages -> pack -> logprobs -> loss -> backward (accumulated over the micro-batches, the
loss normalised over all loss tokens of the step) -> optimizer step.

pi_old (for icepop / tis / decoupled) is "the trainer's logprobs before this step's update". The step makes one
update and the model has no dropout, so those are exactly the values of this step's own forward pass: the loss
takes them detached from it instead of paying for a second forward (tests check the two agree).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from slime_rl.config import RunConfig
from slime_rl.results import BatchStats, UpdateStats
from slime_rl.staleness import StalenessRule
from slime_rl.trajectory import Trajectory, TrajectoryGroup

from .advantages import compute_advantages
from .losses import NEEDS_OLD_LOGP, LossInputs, policy_loss
from .packing import PackedBatch, budget_fill, pack, padding_waste
from .staleness import StalenessFilter, StalenessReport

_AVERAGED = ("masked_frac", "clip_frac", "clip_frac_high", "clip_frac_low", "is_weight_mean", "logp_diff_mean", "kl")


@dataclass
class TokenView:
    """The loss tokens of one packed micro-batch: where their logprobs sit in the row, and their data."""

    positions: torch.Tensor  # [N] long: out[0, p] of forward_logprobs is the logprob of this token
    logp_rollout: torch.Tensor  # [N]
    advantages: torch.Tensor  # [N]


@dataclass
class StepReport:
    """What train_step did: the batch (always), the update (None when no optimizer step was taken: nothing
    survived the staleness filter) and the ids of the trajectories it trained on."""

    batch: BatchStats
    update: UpdateStats | None
    kept_ids: list[str]


@dataclass
class StepPlan:
    report: StalenessReport
    trajs: list[Trajectory]  # kept groups flattened, padded copies included
    advantages: list[float]  # one per entry of trajs
    batches: list[PackedBatch]
    views: list[TokenView]

    @property
    def loss_tokens(self) -> int:
        return sum(len(v.positions) for v in self.views)


def token_view(batch: PackedBatch, trajs: list[Trajectory], advs: list[float]) -> TokenView:
    pos, lp, adv = [], [], []
    for slot, i in enumerate(batch.items):
        t = trajs[i]
        idx = torch.tensor(t.loss_mask, dtype=torch.bool).nonzero()[:, 0]
        # the logprob of response token j is predicted at the row index just before it
        pos.append(batch.response_starts[slot] + idx)
        lp.append(torch.tensor(t.rollout_logprobs, dtype=torch.float32)[idx])
        adv.append(torch.full((len(idx),), advs[i], dtype=torch.float32))
    return TokenView(torch.cat(pos), torch.cat(lp), torch.cat(adv))


def plan_step(groups: list[TrajectoryGroup], version: int, cfg: RunConfig) -> StepPlan:
    """Everything before the model: filter, advantages, packing, loss-token positions (pure, no model)."""
    report = StalenessFilter(StalenessRule.of(cfg)).apply(groups, version)
    rewards = [[t.reward for t in g.trajectories] for g in report.kept_groups]
    trajs = [t for g in report.kept_groups for t in g.trajectories]
    advs = [a for group_adv in compute_advantages(rewards, cfg.loss) for a in group_adv]
    batches = pack(trajs, cfg.trainer.micro_batch_tokens, share_prefix=cfg.trainer.share_prompt_prefix)
    return StepPlan(report, trajs, advs, batches, [token_view(b, trajs, advs) for b in batches])


def _packed(plan: StepPlan) -> list[tuple[torch.Tensor | None, ...]]:
    return [b.model_inputs() for b in plan.batches]


def reference_logprobs(reference, plan: StepPlan) -> list[torch.Tensor]:
    """The reference policy's logprobs of each micro-batch's loss tokens (for the KL penalty)."""

    def grab(lp: torch.Tensor, k: int):
        return lp.sum() * 0.0, {"lp": lp[0, plan.views[k].positions.to(lp.device)].detach()}

    with torch.no_grad():
        return [m["lp"] for m in reference.forward_backward(_packed(plan), grab, forward_only=True)]


def train_step(policy, groups: list[TrajectoryGroup], version: int, cfg: RunConfig, reference=None) -> StepReport:
    """Train on `groups` as the policy at `version`; no optimizer step (report.update None) when nothing survived
    the staleness filter. `reference`: a frozen policy, needed when kl_coef > 0."""
    started = time.perf_counter()
    plan = plan_step(groups, version, cfg)
    received = [t for g in groups for t in g.trajectories]
    batch = BatchStats(
        **plan.report.metrics(),
        groups=len(groups),
        samples=len(received),
        reward_mean=_mean([t.reward for t in received]),
        response_len_mean=_mean([len(t.response_ids) for t in received]),
    )
    report = StepReport(batch, None, list(plan.report.kept_ids))
    if not plan.trajs:
        return report
    if cfg.loss.kl_coef > 0 and reference is None:
        raise ValueError("loss.kl_coef > 0 needs a reference policy")
    ref = reference_logprobs(reference, plan) if cfg.loss.kl_coef > 0 else None
    total = plan.loss_tokens
    needs_old = cfg.loss.kind in NEEDS_OLD_LOGP

    def loss_fn(lp: torch.Tensor, k: int):
        v, dev = plan.views[k], lp.device
        logp = lp[0, v.positions.to(dev)]
        loss, m = policy_loss(
            LossInputs(
                logp,
                v.logp_rollout.to(dev),
                v.advantages.to(dev),
                logp_old=logp.detach() if needs_old else None,
                logp_ref=ref[k].to(dev) if ref is not None else None,
                normalizer=total,
            ),
            cfg.loss,
        )
        return loss, {**m, "loss": float(loss.detach()), "n": len(v.positions)}

    per_batch = policy.forward_backward(_packed(plan), loss_fn)
    averaged = {key: sum(m[key] * m["n"] for m in per_batch) / total if per_batch else 0.0 for key in _AVERAGED}
    optimizer = policy.optimizer_step()
    elapsed = time.perf_counter() - started
    tokens = sum(b.num_tokens for b in plan.batches)
    report.update = UpdateStats(
        loss=sum(m["loss"] for m in per_batch),
        **averaged,
        **optimizer,
        tokens=tokens,
        loss_tokens=total,
        micro_batches=len(plan.batches),
        padding_waste=padding_waste(plan.batches),
        budget_fill=budget_fill(plan.batches, cfg.trainer.micro_batch_tokens),
        step_time_s=elapsed,
        tokens_per_s=tokens / elapsed,
    )
    return report


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
