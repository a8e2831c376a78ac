import pytest

from slime_rl.config import BilateralLoss
from slime_rl.trainer.advantages import compute_advantages, grpo, reinforce_pp, reinforce_pp_baseline, rloo


def test_grpo_mean_and_std():
    assert grpo([1.0, 0.0, 1.0, 0.0], std_normalize=False) == [0.5, -0.5, 0.5, -0.5]
    assert grpo([1.0, 0.0, 1.0, 0.0]) == pytest.approx([1.0, -1.0, 1.0, -1.0], rel=1e-5)  # population std 0.5
    assert grpo([3.0, 0.0, 0.0]) == pytest.approx([2 / 2**0.5, -1 / 2**0.5, -1 / 2**0.5], rel=1e-5)
    assert grpo([1.0, 1.0]) == [0.0, 0.0]  # a group that agrees teaches nothing


def test_rloo_leaves_one_out():
    assert rloo([1.0, 0.0, 0.0, 0.0]) == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])
    assert rloo([5.0]) == [0.0]


def test_reinforce_pp_whitens_over_the_batch():
    out = reinforce_pp([[1.0, 0.0], [3.0, 0.0]])  # batch mean 1, population std sqrt(1.5)
    s = 1.5**0.5
    assert [x for g in out for x in g] == pytest.approx([0.0, -1 / s, 2 / s, -1 / s], rel=1e-5)


def test_reinforce_pp_baseline_centres_per_group_then_scales_by_the_batch():
    out = reinforce_pp_baseline([[1.0, 0.0], [3.0, 1.0]])
    s = 0.625**0.5  # std of the centred values [0.5, -0.5, 1, -1]
    assert [x for g in out for x in g] == pytest.approx([0.5 / s, -0.5 / s, 1 / s, -1 / s], rel=1e-5)


def test_compute_advantages_dispatches_and_checks_input():
    assert compute_advantages([[1.0, 0.0]], BilateralLoss(advantage="grpo", std_normalize=False)) == [[0.5, -0.5]]
    assert compute_advantages([[1.0, 0.0]], BilateralLoss(advantage="rloo")) == [[1.0, -1.0]]
    with pytest.raises(ValueError, match="group 1 has no rewards"):
        compute_advantages([[1.0], []], BilateralLoss())
    with pytest.raises(ValueError, match="non-finite"):
        compute_advantages([[float("nan")]], BilateralLoss())
