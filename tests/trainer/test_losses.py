import math

import pytest
import torch

from slime_rl.config import BilateralLoss, DecoupledLoss, IcePopLoss, NoCorrectionLoss, TISLoss
from slime_rl.trainer.losses import LossInputs, policy_loss


def inputs(logp, rollout, adv, old=None):
    return LossInputs(
        torch.tensor(logp, requires_grad=True),
        torch.tensor(rollout),
        torch.tensor(adv),
        None if old is None else torch.tensor(old),
    )


def test_bilateral_masks_outside_the_band_and_on_its_edges():
    cfg = BilateralLoss(eps_low=0.2, eps_high=0.25)
    # ratios: 1.0 (kept), 1.25 (exactly on the upper edge: masked), 0.8 (on the lower edge: masked), 1.1 (kept),
    # 2.0 (masked)
    ratios = [1.0, 1.25, 0.8, 1.1, 2.0]
    rollout = [-1.0] * 5
    logp = [r + math.log(x) for r, x in zip(rollout, ratios)]
    adv = [1.0, 1.0, -1.0, -2.0, 1.0]
    x = inputs(logp, rollout, adv)
    loss, m = policy_loss(x, cfg)
    kept = [1, 0, 0, 1, 0]
    # L = -mean[ f(r) * A * logp ]
    expected = -sum(k * r * a * lp for k, r, a, lp in zip(kept, ratios, adv, logp)) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert m["masked_frac"] == pytest.approx(3 / 5)
    loss.backward()
    # gradient wrt logp_i = -f(r_i) * A_i / N; masked tokens give exactly zero
    grad = x.logp.grad.tolist()
    for g, k, r, a in zip(grad, kept, ratios, adv):
        assert g == pytest.approx(-k * r * a / 5, rel=1e-5, abs=0.0)
    assert grad[1] == 0.0 and grad[2] == 0.0 and grad[4] == 0.0


def test_bilateral_on_policy_equals_policy_gradient():
    torch.manual_seed(0)
    logp = -torch.rand(7)
    adv = torch.randn(7)
    a = LossInputs(logp.clone().requires_grad_(True), logp.clone(), adv)
    loss, m = policy_loss(a, BilateralLoss())
    loss.backward()
    b = logp.clone().requires_grad_(True)
    (-(adv * b).mean()).backward()
    assert torch.allclose(a.logp.grad, b.grad)
    assert m["masked_frac"] == 0.0 and m["logp_diff_mean"] == 0.0


def test_icepop_band_on_old_over_rollout():
    cfg = IcePopLoss(beta=2.0, clip_low=0.2, clip_high=0.2)
    rollout = [-1.0, -1.0, -1.0]
    old = [-1.0, -1.0 + math.log(2.0), -1.0 + math.log(2.5)]  # w = 1 (kept), 2 (edge: kept, closed band), 2.5 (masked)
    logp = [o + math.log(1.5) for o in old]  # ratio to old = 1.5 -> clipped to 1.2 for positive advantage
    x = inputs(logp, rollout, [1.0, 1.0, 1.0], old)
    loss, m = policy_loss(x, cfg)
    assert loss.item() == pytest.approx(-(1.2 + 1.2 + 0.0) / 3, rel=1e-5)
    assert m["masked_frac"] == pytest.approx(1 / 3)
    assert m["clip_frac"] == pytest.approx(1.0)
    x.logp.grad = None
    loss.backward()
    assert x.logp.grad.tolist() == [0.0, 0.0, 0.0]  # clipped (ratio 1.5 > 1.2 with A > 0) or masked: no gradient


def test_tis_truncates_the_weight():
    cfg = TISLoss(cap=2.0, clip_low=0.2, clip_high=0.2)
    rollout = [-2.0, -2.0]
    old = [-2.0 + math.log(3.0), -2.0 + math.log(0.5)]  # weights 3 -> capped 2, and 0.5
    logp = old  # ratio to old = 1
    loss, _ = policy_loss(inputs(logp, rollout, [1.0, -1.0], old), cfg)
    assert loss.item() == pytest.approx(-(2.0 * 1.0 + 0.5 * -1.0) / 2, rel=1e-5)


def test_decoupled_uses_prox_over_behaviour_weight():
    cfg = DecoupledLoss(clip_low=0.2, clip_high=0.2)
    rollout, old = [-1.0], [-1.0 + math.log(1.5)]
    logp = [old[0] + math.log(0.5)]  # ratio 0.5 with A<0 -> clip to 0.8: min(-0.5, -0.8) = -0.8
    loss, _ = policy_loss(inputs(logp, rollout, [-1.0], old), cfg)
    assert loss.item() == pytest.approx(-(1.5 * -0.8), rel=1e-5)


def test_none_is_plain_ppo_clip_against_rollout():
    cfg = NoCorrectionLoss(clip_low=0.2, clip_high=0.28)
    rollout = [-1.0, -1.0]
    logp = [-1.0 + math.log(1.5), -1.0 + math.log(0.9)]
    loss, m = policy_loss(inputs(logp, rollout, [1.0, 1.0]), cfg)
    assert loss.item() == pytest.approx(-(1.28 + 0.9) / 2, rel=1e-5)
    assert m["clip_frac"] == pytest.approx(0.5) and m["clip_frac_high"] == pytest.approx(0.5)
    assert m["clip_frac_low"] == 0.0


def test_variants_needing_old_logprobs_say_so():
    with pytest.raises(ValueError, match="needs logp_old"):
        policy_loss(inputs([-1.0], [-1.0], [1.0]), TISLoss())
    with pytest.raises(ValueError, match="needs logp_ref"):
        policy_loss(inputs([-1.0], [-1.0], [1.0]), BilateralLoss(kl_coef=0.1))
    with pytest.raises(ValueError, match="logp_rollout has shape"):
        policy_loss(inputs([-1.0, -2.0], [-1.0], [1.0, 1.0]), BilateralLoss())


def test_kl_penalty_is_zero_at_the_reference_and_positive_away():
    cfg = BilateralLoss(kl_coef=0.5)
    x = inputs([-1.0, -2.0], [-1.0, -2.0], [0.0, 0.0])
    x.logp_ref = torch.tensor([-1.0, -2.0])
    loss, m = policy_loss(x, cfg)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    x2 = inputs([-1.0, -2.0], [-1.0, -2.0], [0.0, 0.0])
    x2.logp_ref = torch.tensor([-1.5, -1.5])
    loss2, m2 = policy_loss(x2, cfg)
    assert loss2.item() > 0 and m2["kl"] > 0


def inputs64(logp, rollout, adv, old=None):
    f = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731  (exact band edges)
    return LossInputs(f(logp).requires_grad_(True), f(rollout), f(adv), None if old is None else f(old))


def test_icepop_lower_edge_is_kept_and_gradients_follow_the_band():
    cfg = IcePopLoss(beta=2.0)
    old = [math.log(0.5), math.log(0.49), 0.0]  # w = 1/beta exactly (kept), just below (masked), 1 (kept)
    x = inputs64(old, [0.0, 0.0, 0.0], [1.0, 1.0, -1.0], old)  # pi_theta = pi_old: rho = 1, nothing clipped
    loss, m = policy_loss(x, cfg)
    assert loss.item() == pytest.approx(-(1.0 + 0.0 - 1.0) / 3, abs=1e-12)
    assert m["masked_frac"] == pytest.approx(1 / 3) and m["clip_frac"] == 0.0
    loss.backward()
    assert x.logp.grad.tolist() == pytest.approx([-1 / 3, 0.0, 1 / 3])
    assert x.logp.grad[1].item() == 0.0


def test_tis_gradient_is_the_truncated_weight_times_the_policy_gradient():
    cfg = TISLoss(cap=2.0)
    old = [math.log(3.0), math.log(0.5)]
    x = inputs64(old, [0.0, 0.0], [1.0, -1.0], old)
    loss, m = policy_loss(x, cfg)
    loss.backward()
    assert x.logp.grad.tolist() == pytest.approx([-2.0 / 2, 0.5 / 2])
    assert m["is_weight_mean"] == pytest.approx((2.0 + 0.5) / 2)


def test_decoupled_weight_can_be_capped():
    cfg = DecoupledLoss(cap=1.2)
    old = [math.log(1.5)]
    loss, m = policy_loss(inputs64(old, [0.0], [2.0], old), cfg)
    assert loss.item() == pytest.approx(-1.2 * 2.0)
    assert m["is_weight_mean"] == pytest.approx(1.2)


def test_none_clips_the_low_side_for_negative_advantages():
    cfg = NoCorrectionLoss(clip_low=0.2, clip_high=0.28)
    x = inputs64([math.log(0.5), math.log(0.9)], [0.0, 0.0], [-1.0, -1.0])
    loss, m = policy_loss(x, cfg)
    assert loss.item() == pytest.approx(-(-0.8 - 0.9) / 2)  # min(-0.5, -0.8) = -0.8 (clipped); -0.9 (inside)
    assert m["clip_frac_low"] == pytest.approx(0.5) and m["clip_frac_high"] == 0.0
    loss.backward()
    assert x.logp.grad.tolist() == pytest.approx([0.0, 0.9 / 2])  # d/dlogp of -(r * A) / N = -r * A / N


def test_normalizer_spreads_the_mean_over_the_whole_step():
    """Two micro-batches, each divided by the step's token count, add up to the loss of the whole step."""
    torch.manual_seed(1)
    logp, rollout, adv = -torch.rand(6), -torch.rand(6), torch.randn(6)
    cfg = BilateralLoss(eps_low=0.9, eps_high=5.0)
    whole, _ = policy_loss(LossInputs(logp, rollout, adv), cfg)
    parts = [
        policy_loss(LossInputs(logp[s], rollout[s], adv[s], normalizer=6), cfg)[0] for s in (slice(0, 2), slice(2, 6))
    ]
    assert (parts[0] + parts[1]).item() == pytest.approx(whole.item(), rel=1e-6)
