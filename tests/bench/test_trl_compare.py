"""bench trl: the pieces that make the comparison fair, checked on CPU without training either side."""

import json

import pytest

from slime_rl.bench.trl_compare import (
    LoadSampler,
    bench_config,
    compare,
    distinct_prompts,
    env_reward,
    greedy_eval,
    prompt_rows,
    reward_delta_se,
    single_turn_env,
    slime_train_window,
    trl_args,
)
from slime_rl_examples.math_env import ArithmeticEnv

SAMPLE = {"id": "1-0", "question": "What is 3 + 4?", "answer": "7"}


@pytest.fixture
def cfg(tmp_path):
    return bench_config(tmp_path / "run", steps=3)


def test_reward_adapter_gives_the_env_reward(cfg):
    env = single_turn_env(cfg)
    reward = env_reward(env)
    replies = ["7", "3 + 4 = 7", "8", "The answer is seven."]
    rows = prompt_rows(env, [SAMPLE] * len(replies))
    expected = [ArithmeticEnv(**cfg.env.kwargs).reward(SAMPLE, r) for r in replies]
    columns = {"sample": [r["sample"] for r in rows], "trainer_state": None, "log_metric": print}
    # TRL hands conversational completions as one assistant message each, plain-text ones as strings
    chat = [[{"role": "assistant", "content": r}] for r in replies]
    assert reward(completions=chat, prompts=[r["prompt"] for r in rows], **columns) == expected == [1, 1, 0, 0]
    assert reward(completions=replies, **columns) == expected


def test_prompt_rows_carry_the_env_prompt_and_the_sample(cfg):
    env = single_turn_env(cfg)
    (row,) = prompt_rows(env, [SAMPLE])
    assert row["prompt"] == env.prompt(SAMPLE) and json.loads(row["sample"]) == SAMPLE


def test_trl_config_matches_the_slime_workload(cfg):
    args = trl_args(cfg, cfg.run_dir / "trl")
    r, s = cfg.rollout, cfg.rollout.sampling
    assert args["num_generations"] == r.group_size
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == r.group_size * r.groups_per_step
    assert (args["max_completion_length"], args["temperature"]) == (s.max_new_tokens, s.temperature)
    assert (args["max_steps"], args["learning_rate"]) == (3, cfg.trainer.lr)
    assert args["use_cpu"] and not args["use_vllm"] and args["beta"] == 0.0
    # the same precision on both sides: TRL's mixed precision when slime-rl trains in bfloat16
    assert args["bf16"] == (cfg.model.dtype == "bfloat16") and not args["fp16"]
    assert not cfg.dashboard.enabled and cfg.trainer.checkpoint_every == 0


def test_trl_accepts_the_config(cfg, tmp_path):
    trl = pytest.importorskip("trl")
    config = trl.GRPOConfig(**trl_args(cfg, tmp_path / "trl"))
    assert config.generation_batch_size == cfg.rollout.group_size * cfg.rollout.groups_per_step


def test_slime_window_runs_from_the_first_eval_to_the_last_step(tmp_path):
    lines = [
        {"t": 100.0, "kind": "eval", "step": 0},
        {"t": 101.0, "kind": "rollout"},
        {"t": 110.0, "kind": "trainer", "step": 1, "step_time_s": 4.0},
        {"t": 125.0, "kind": "trainer", "step": 2, "step_time_s": 5.0},
        {"t": 160.0, "kind": "eval", "step": 2},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    wall, steps = slime_train_window(path)
    assert wall == 25.0 and [r["step_time_s"] for r in steps] == [4.0, 5.0]


def test_compare_ratio_and_target():
    trl = {"samples_per_s": 2.0, "wall_s": 16.0, "heldout_reward_after": 0.5}
    fast = compare({"samples_per_s": 5.0, "wall_s": 6.4, "heldout_reward_after": 0.5}, trl, distinct_prompts=90)
    assert fast["throughput_ratio_vs_trl"] == 2.5 and fast["meets_target"] and fast["reward_not_worse"]
    assert fast["wall_ratio_trl_over_slime"] == 2.5
    # 0.1 lower over 10,000 prompts is far outside the noise (2 SE = 0.014): not equal
    worse = compare({"samples_per_s": 5.0, "wall_s": 6.4, "heldout_reward_after": 0.4}, trl, distinct_prompts=10_000)
    assert not worse["meets_target"] and worse["heldout_reward_after_delta_vs_trl"] == pytest.approx(-0.1)
    assert worse["heldout_reward_delta_se"] == pytest.approx(((0.24 + 0.25) / 10_000) ** 0.5)
    slow = compare({"samples_per_s": 3.0, "wall_s": 10.0, "heldout_reward_after": 0.5}, trl, distinct_prompts=90)
    assert not slow["meets_target"] and slow["reward_within_noise"]


def test_a_reward_lower_within_noise_counts_as_equal_but_not_as_better():
    trl = {"samples_per_s": 1.0, "wall_s": 10.0, "heldout_reward_after": 0.96875}
    c = compare({"samples_per_s": 2.5, "wall_s": 4.0, "heldout_reward_after": 0.953125}, trl, distinct_prompts=90)
    assert not c["reward_not_worse"] and c["reward_within_noise"] and c["meets_target"]
    assert c["heldout_reward_delta_se"] == pytest.approx(reward_delta_se(0.953125, 0.96875, 90))
    assert c["heldout_distinct_prompts"] == 90


def test_held_out_set_counts_its_distinct_prompts(tmp_path):
    cfg = bench_config(tmp_path / "run", steps=2)
    assert cfg.eval_samples == 200
    assert distinct_prompts(cfg) == 90  # examples/math/eval.jsonl: 200 rows, 90 different questions


class RecordingEnv(ArithmeticEnv):
    """Scores nothing, remembers which reply each question got."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.replies: dict[str, str] = {}

    def reward(self, sample, response_text):
        self.replies[sample["question"]] = response_text
        return 0.0


def test_greedy_eval_scores_what_the_model_says_to_each_prompt_alone(tiny_model_path):
    """Tiny random model: batched, left-padded evaluation hands env.reward the same replies as one prompt at a
    time, cut at EOS and decoded without special tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    env = RecordingEnv()
    samples = [{"id": str(i), "question": f"What is {i} + {i * 3}?", "answer": "0"} for i in range(3)]
    alone = {}
    for s in samples:
        ids = tok.apply_chat_template(env.prompt(s), add_generation_prompt=True, return_tensors="pt", return_dict=True)[
            "input_ids"
        ]
        out = model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id)
        alone[s["question"]] = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    result = greedy_eval(model, tok, env, samples, max_new_tokens=6, batch_size=2)
    assert result["samples"] == 3 and result["reward_mean"] == 0.0 and 1 <= result["response_len_mean"] <= 6
    assert env.replies == alone and all(alone.values())


def test_load_sampler_samples_until_the_block_ends():
    import time

    with LoadSampler(every_s=0.01) as load:
        time.sleep(0.1)
    n = len(load.samples)
    time.sleep(0.05)
    assert n >= 2 and len(load.samples) == n and load.mean >= 0.0
