"""The train step on the tiny random Llama through the Megatron policy: it learns in the direction of the
advantages, its micro-batching does not change the gradient, pi_old from the step's own forward is exact, every
loss variant gives the on-policy gradient at staleness 0, the KL reference, and stale batches are not trained."""

from __future__ import annotations

import pytest
import torch
from trainer_helpers import BAD, GOOD, PROMPT, on_policy_group, seq_logprobs

from slime_rl.config import RunConfig
from slime_rl.trainer.parallel import init_parallel
from slime_rl.trainer.policy import MegatronPolicy
from slime_rl.trainer.train_step import plan_step, train_step


@pytest.fixture(scope="module")
def parallel():
    torch.set_num_threads(2)
    init_parallel()


def config(tiny_model_path, staleness_tau: int = 2, **loss) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"path": str(tiny_model_path)},
            "rollout": {"staleness_tau": staleness_tau},
            "trainer": {"lr": 1e-2, "micro_batch_tokens": 64, "grad_clip": 0.0},
            "loss": {"kind": "bilateral", **loss},
        }
    )


def test_step_moves_logprobs_toward_the_advantage(parallel, tiny_model_path):
    cfg = config(tiny_model_path)
    policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    before_good, before_bad = sum(seq_logprobs(policy, PROMPT, GOOD)), sum(seq_logprobs(policy, PROMPT, BAD))
    groups = [on_policy_group(policy, "g0"), on_policy_group(policy, "g1")]
    report = train_step(policy, groups, version=0, cfg=cfg)
    m = report.update
    assert m is not None and report.batch.kept == 8 and report.batch.padded == 0 and m.grad_norm > 0
    assert m.masked_frac == 0.0 and m.logp_diff_mean < 1e-5  # staleness 0: the trainer agrees with rollout
    # both groups ask the same prompt: it is packed once (all but its last token), its last token once per sample
    assert m.loss_tokens == 2 * (5 + 3 + 5 + 4) and m.tokens == m.loss_tokens + (len(PROMPT) - 1) + 8
    after_good, after_bad = sum(seq_logprobs(policy, PROMPT, GOOD)), sum(seq_logprobs(policy, PROMPT, BAD))
    assert after_good > before_good  # the rewarded response became more likely
    assert after_good - after_bad > before_good - before_bad  # ... relative to the unrewarded one
    # a second step on fresh on-policy data keeps improving the objective
    m2 = train_step(policy, [on_policy_group(policy, "g2")], version=1, cfg=cfg).update
    assert m2.loss < m.loss


def test_micro_batching_and_prompt_sharing_do_not_change_the_gradient(parallel, tiny_model_path):
    norms, losses, counts, tokens = [], [], {}, {}
    # two micro-batches vs several, each flat and with the group's prompt shared: the loss is a mean over all loss
    # tokens of the step, and a branch continuing a shared prompt sees exactly what the flat sequence sees
    for budget, share in ((64, False), (16, False), (64, True), (16, True)):
        cfg = config(tiny_model_path)
        cfg.trainer.micro_batch_tokens, cfg.trainer.share_prompt_prefix = budget, share
        policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
        groups = [on_policy_group(policy, "a"), on_policy_group(policy, "b")]
        plan = plan_step(groups, 0, cfg)
        counts[budget, share], tokens[budget, share] = len(plan.batches), sum(b.num_tokens for b in plan.batches)
        m = train_step(policy, groups, 0, cfg).update
        norms.append(m.grad_norm)
        losses.append(m.loss)
    assert counts[64, False] == 2 and counts[16, False] >= 4 and counts[64, True] == 1 and counts[16, True] >= 2
    assert tokens[64, True] < tokens[64, False]
    assert max(norms) == pytest.approx(min(norms), rel=1e-5), norms
    assert max(losses) == pytest.approx(min(losses), rel=1e-5, abs=1e-7), losses


def test_shared_prompt_logprobs_equal_the_flat_ones(parallel, tiny_model_path):
    cfg = config(tiny_model_path)
    policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    groups = [on_policy_group(policy, "a"), on_policy_group(policy, "b")]
    per_traj = {}
    for share in (False, True):
        cfg.trainer.share_prompt_prefix = share
        plan = plan_step(groups, 0, cfg)
        assert any(b.prefix_of is not None for b in plan.batches) == share
        got = {}
        with torch.no_grad():
            for b, view in zip(plan.batches, plan.views):
                lp = policy.forward_logprobs(*b.model_inputs())[0, view.positions]
                lens = [len(plan.trajs[i].response_ids) for i in b.items]
                for i, part in zip(b.items, lp.split(lens)):
                    got[i] = part
        per_traj[share] = got
    assert per_traj[True].keys() == per_traj[False].keys() == set(range(8))
    for i, flat in per_traj[False].items():
        assert torch.allclose(per_traj[True][i], flat, atol=1e-5)
        # ... and both are the rollout's (on-policy) logprobs, computed on each sequence alone
        rollout = torch.tensor(groups[i // 4].trajectories[i % 4].rollout_logprobs)
        assert torch.allclose(flat, rollout, atol=1e-5)


def test_every_variant_gives_the_on_policy_gradient_at_staleness_zero(parallel, tiny_model_path):
    """With pi_theta = pi_old = pi_rollout every IS weight is 1 and nothing is clipped: all five losses have the
    gradient of -mean(A * logp)."""
    norms = {}
    for kind in ("bilateral", "icepop", "tis", "decoupled", "none"):
        cfg = config(tiny_model_path, kind=kind)
        policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
        m = train_step(policy, [on_policy_group(policy, "a")], 0, cfg).update
        assert m.clip_frac == 0.0 and m.masked_frac == 0.0 and m.is_weight_mean == pytest.approx(1.0)
        norms[kind] = m.grad_norm
    assert max(norms.values()) == pytest.approx(min(norms.values()), rel=1e-5), norms


def test_old_logprobs_from_the_step_forward_equal_a_separate_no_grad_pass(parallel, tiny_model_path):
    policy = MegatronPolicy.from_hf(tiny_model_path, config(tiny_model_path).trainer)
    plan = plan_step([on_policy_group(policy, "a")], 0, config(tiny_model_path))
    b = plan.batches[0]
    with torch.no_grad():
        separate = policy.forward_logprobs(*b.model_inputs())
    with_grad = policy.forward_logprobs(*b.model_inputs())
    assert torch.equal(with_grad.detach(), separate)


def test_kl_penalty_against_the_frozen_reference(parallel, tiny_model_path):
    cfg = config(tiny_model_path, kl_coef=0.5)
    policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    reference = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    with pytest.raises(ValueError, match="reference"):
        train_step(policy, [on_policy_group(policy, "a")], 0, cfg)
    m0 = train_step(policy, [on_policy_group(policy, "a")], 0, cfg, reference=reference).update
    assert m0.kl == pytest.approx(0.0, abs=1e-7)  # same weights before the first update
    m1 = train_step(policy, [on_policy_group(policy, "b")], 1, cfg, reference=reference).update
    assert m1.kl > 0


def test_a_batch_of_stale_groups_is_not_trained(parallel, tiny_model_path):
    cfg = config(tiny_model_path, staleness_tau=1)
    policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    before = {k: v.clone() for k, v in policy.megatron_state_dict().items()}
    report = train_step(policy, [on_policy_group(policy, "old", version=0)], version=5, cfg=cfg)
    assert report.update is None and report.batch.dropped_stale == 4 and report.batch.staleness_hist == {"5": 4}
    assert report.kept_ids == [] and report.batch.trainable_groups == 1  # stale, but not failed
    assert all(torch.equal(before[k], v) for k, v in policy.megatron_state_dict().items())
