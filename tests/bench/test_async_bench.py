"""The async-vs-sync benchmark's workload and arithmetic (the training runs themselves are in `make bench`)."""

import pytest

from slime_rl.bench.async_vs_sync import bench_config, compare, long_tail_rows, measure
from slime_rl.results import BatchStats, PushReceipt, StepState, TrainStepResult, UpdateStats


def test_workload_has_a_long_tail_and_keeps_the_prompts():
    rows = long_tail_rows(200, median=12, max_len=160)
    lengths = sorted(r["max_new_tokens"] for r in rows)
    p99, median = lengths[int(0.99 * 199)], lengths[100]
    assert 7 <= p99 / median <= 13
    assert max(lengths) <= 160 and all({"question", "answer"} <= set(r) for r in rows)


def trained(
    step_time_s: float,
    kept: int,
    reward_mean: float,
    staleness_hist: dict[str, int],
    tokens: int,
    dropped_stale: int,
    blocked_s: float | None = None,
) -> TrainStepResult:
    """A trained step's result with the numbers the benchmark reads (the rest zero)."""
    batch = BatchStats(
        groups=2,
        samples=kept + dropped_stale,
        trainable_groups=2,
        kept=kept,
        kept_groups=2,
        padded=0,
        dropped_stale=dropped_stale,
        dropped_invalid=0,
        dropped_with_group=0,
        dropped_groups=0,
        staleness_hist=staleness_hist,
        reward_mean=reward_mean,
        response_len_mean=8.0,
    )
    zero = {name: 0.0 for name, f in UpdateStats.model_fields.items() if f.annotation is float}
    update = UpdateStats(
        **{**zero, "step_time_s": step_time_s, "tokens": tokens, "loss_tokens": tokens, "micro_batches": 1}
    )
    return TrainStepResult(
        state=StepState.TRAINED,
        step=1,
        version=1,
        batch=batch,
        update=update,
        push=PushReceipt(version=1, blocked_s=blocked_s) if blocked_s is not None else None,
    )


def test_idle_fractions_speedup_and_ideal():
    history = [
        trained(2.0, 8, 0.5, {"0": 6, "1": 2}, tokens=120, dropped_stale=0, blocked_s=0.5),
        trained(3.0, 8, 0.25, {"1": 8}, tokens=90, dropped_stale=3),
    ]
    a = measure("async", 10.0, history, {"tokens": 100, "per_worker": [{"active_s": 8.0}]})
    assert a["trainer_busy_s"] == pytest.approx(5.5) and a["trainer_idle_frac"] == pytest.approx(0.45)
    assert a["rollout_idle_frac"] == pytest.approx(0.2) and a["trained_samples"] == 16
    assert a["staleness_mean"] == pytest.approx(10 / 16)
    assert a["trained_tokens"] == 210 and a["dropped_stale"] == 3
    s = measure("sync", 25.0, history, {"tokens": 100, "per_worker": [{"active_s": 12.0}]})
    c = compare(s, a)
    assert c["speedup_vs_sync"] == pytest.approx(2.5) and c["ratio_to_ideal"] == pytest.approx(10.0 / 8.0)
    assert c["trained_tokens_per_s_speedup"] == pytest.approx(2.5)
    # sync trained twice the tokens in its 25 s: per trained token, async is 21 / 16.8 = 1.25x faster
    doubled = [
        r.model_copy(update={"update": r.update.model_copy(update={"tokens": 2 * r.update.tokens})}) for r in history
    ]
    longer = measure("sync", 25.0, doubled, {"tokens": 100, "per_worker": [{"active_s": 12.0}]})
    assert compare(longer, a)["trained_tokens_per_s_speedup"] == pytest.approx(1.25)


def test_both_modes_share_everything_but_the_mode(tmp_path):
    sync = bench_config("sync", tmp_path / "d.jsonl", tmp_path / "s", 3, 96, quick=True)
    asyn = bench_config("async", tmp_path / "d.jsonl", tmp_path / "a", 3, 96, quick=True)
    assert (sync.mode, asyn.mode) == ("sync", "async")
    assert sync.rollout == asyn.rollout and sync.trainer == asyn.trainer and sync.loss == asyn.loss
    assert sync.rollout.sampling.ignore_eos and sync.rollout.over_provision == 1.0
