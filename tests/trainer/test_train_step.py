"""The train step on the tiny random Llama through the Megatron policy: it learns in the direction of the
advantages, its micro-batching does not change the gradient, pi_old from the step's own forward is exact, every
loss variant gives the on-policy gradient at staleness 0, the KL reference, and stale batches are not trained."""
from __future__ import annotations

import pytest
import torch

from slime_rl.config import RunConfig
from slime_rl.trainer.parallel import init_parallel
from slime_rl.trainer.policy import MegatronPolicy
from slime_rl.trainer.train_step import plan_step, train_step

from trainer_helpers import BAD, GOOD, PROMPT, on_policy_group, seq_logprobs


@pytest.fixture(scope="module")
def parallel():
    torch.set_num_threads(2)
    init_parallel()


def config(tiny_model_path, **loss) -> RunConfig:
    return RunConfig.model_validate({"model": {"path": str(tiny_model_path)},
                                     "trainer": {"lr": 1e-2, "micro_batch_tokens": 64, "grad_clip": 0.0},
                                     "loss": {"kind": "bilateral", **loss}})


def test_step_moves_logprobs_toward_the_advantage(parallel, tiny_model_path):
    cfg = config(tiny_model_path)
    policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    before_good, before_bad = sum(seq_logprobs(policy, PROMPT, GOOD)), sum(seq_logprobs(policy, PROMPT, BAD))
    groups = [on_policy_group(policy, "g0"), on_policy_group(policy, "g1")]
    m = train_step(policy, groups, version=0, cfg=cfg)
    assert m["stepped"] and m["kept"] == 8 and m["padded"] == 0 and m["grad_norm"] > 0
    assert m["masked_frac"] == 0.0 and m["logp_diff_mean"] < 1e-5  # staleness 0: the trainer agrees with rollout
    assert m["loss_tokens"] == 2 * (5 + 3 + 5 + 4) and m["tokens"] == m["loss_tokens"] + 8 * len(PROMPT)
    after_good, after_bad = sum(seq_logprobs(policy, PROMPT, GOOD)), sum(seq_logprobs(policy, PROMPT, BAD))
    assert after_good > before_good  # the rewarded response became more likely
    assert after_good - after_bad > before_good - before_bad  # ... relative to the unrewarded one
    # a second step on fresh on-policy data keeps improving the objective
    m2 = train_step(policy, [on_policy_group(policy, "g2")], version=1, cfg=cfg)
    assert m2["loss"] < m["loss"]


def test_micro_batching_does_not_change_the_gradient(parallel, tiny_model_path):
    norms, counts = [], []
    for budget in (64, 16):  # two micro-batches vs eight: the loss is a mean over all loss tokens of the step
        cfg = config(tiny_model_path)
        cfg.trainer.micro_batch_tokens = budget
        policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
        groups = [on_policy_group(policy, "a"), on_policy_group(policy, "b")]
        counts.append(len(plan_step(groups, 0, cfg).batches))
        norms.append(train_step(policy, groups, 0, cfg)["grad_norm"])
    assert counts[0] == 2 and counts[1] >= 4
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)


def test_every_variant_gives_the_on_policy_gradient_at_staleness_zero(parallel, tiny_model_path):
    """With pi_theta = pi_old = pi_rollout every IS weight is 1 and nothing is clipped: all five losses have the
    gradient of -mean(A * logp)."""
    norms = {}
    for kind in ("bilateral", "icepop", "tis", "decoupled", "none"):
        cfg = config(tiny_model_path, kind=kind)
        policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
        m = train_step(policy, [on_policy_group(policy, "a")], 0, cfg)
        assert m["clip_frac"] == 0.0 and m["masked_frac"] == 0.0 and m["is_weight_mean"] == pytest.approx(1.0)
        norms[kind] = m["grad_norm"]
    assert max(norms.values()) == pytest.approx(min(norms.values()), rel=1e-5), norms


def test_old_logprobs_from_the_step_forward_equal_a_separate_no_grad_pass(parallel, tiny_model_path):
    policy = MegatronPolicy.from_hf(tiny_model_path, config(tiny_model_path).trainer)
    plan = plan_step([on_policy_group(policy, "a")], 0, config(tiny_model_path))
    b = plan.batches[0]
    with torch.no_grad():
        separate = policy.forward_logprobs(b.tokens, b.position_ids, b.cu_seqlens)
    with_grad = policy.forward_logprobs(b.tokens, b.position_ids, b.cu_seqlens)
    assert torch.equal(with_grad.detach(), separate)


def test_kl_penalty_against_the_frozen_reference(parallel, tiny_model_path):
    cfg = config(tiny_model_path, kl_coef=0.5)
    policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    reference = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    with pytest.raises(ValueError, match="reference"):
        train_step(policy, [on_policy_group(policy, "a")], 0, cfg)
    m0 = train_step(policy, [on_policy_group(policy, "a")], 0, cfg, reference=reference)
    assert m0["kl"] == pytest.approx(0.0, abs=1e-7)  # same weights before the first update
    m1 = train_step(policy, [on_policy_group(policy, "b")], 1, cfg, reference=reference)
    assert m1["kl"] > 0


def test_a_batch_of_stale_groups_is_not_trained(parallel, tiny_model_path):
    cfg = config(tiny_model_path, staleness_tau=1)
    policy = MegatronPolicy.from_hf(tiny_model_path, cfg.trainer)
    before = {k: v.clone() for k, v in policy.megatron_state_dict().items()}
    m = train_step(policy, [on_policy_group(policy, "old", version=0)], version=5, cfg=cfg)
    assert not m["stepped"] and m["dropped_stale"] == 4 and m["staleness_hist"] == {"5": 4}
    assert m["kept_ids"] == []
    assert all(torch.equal(before[k], v) for k, v in policy.megatron_state_dict().items())
