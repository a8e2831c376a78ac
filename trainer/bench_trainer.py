"""`slime-rl bench trainer`: our packed Megatron train step against a plain transformers training loop (padded
batches, as usually written), same model, same trajectories, same run. Tokens/s counts real (non-pad) tokens."""
from __future__ import annotations

import time

import numpy as np
import torch

from slime_rl.config import RunConfig
from slime_rl.model_store import DEFAULT_OUT
from slime_rl.trajectory import Trajectory, TrajectoryGroup


def make_groups(n_groups: int, group_size: int, seed: int = 0) -> list[TrajectoryGroup]:
    rng = np.random.default_rng(seed)
    groups = []
    for g in range(n_groups):
        prompt = rng.integers(100, 40000, int(rng.integers(20, 60))).tolist()
        trajs = []
        for i in range(group_size):
            n = int(rng.integers(4, 48))  # responses of varied length: what padding wastes on
            trajs.append(Trajectory(group_id=f"g{g}", prompt_ids=prompt, response_ids=rng.integers(100, 40000, n).tolist(),
                                    loss_mask=[1] * n, rollout_logprobs=(-rng.random(n) * 3).tolist(),
                                    versions=[0] * n, reward=float(rng.random() > 0.5)))
        groups.append(TrajectoryGroup(group_id=f"g{g}", trajectories=trajs))
    return groups


def bench_ours(cfg: RunConfig, groups: list[TrajectoryGroup], steps: int) -> tuple[float, int, float]:
    from .policy import MegatronPolicy
    from .parallel import init_parallel
    from .train_step import train_step

    init_parallel()
    policy = MegatronPolicy.from_hf(cfg.model.path, cfg.trainer)
    train_step(policy, groups, 0, cfg)  # warm-up
    t0, tokens, waste = time.perf_counter(), 0, 0.0
    for _ in range(steps):
        m = train_step(policy, groups, 0, cfg)
        tokens += m["tokens"]
        waste = m["padding_waste"]
    return time.perf_counter() - t0, tokens, waste


def bench_hf(path, groups: list[TrajectoryGroup], steps: int, batch: int) -> tuple[float, int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    seqs = [t.prompt_ids + t.response_ids for g in groups for t in g.trajectories]

    def one_step() -> int:
        for i in range(0, len(seqs), batch):
            chunk = seqs[i:i + batch]
            width = max(len(s) for s in chunk)
            ids = torch.tensor([s + [0] * (width - len(s)) for s in chunk])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk])
            logits = model(ids, attention_mask=mask).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
            (-(logp * mask[:, 1:]).sum() / mask.sum()).backward()
        opt.step()
        opt.zero_grad()
        return sum(len(s) for s in seqs)

    one_step()  # warm-up
    t0, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += one_step()
    return time.perf_counter() - t0, tokens


def run(quick: bool = False) -> dict:
    n_groups, group_size, steps = (2, 4, 1) if quick else (4, 8, 3)
    cfg = RunConfig.model_validate({"model": {"path": str(DEFAULT_OUT)}, "trainer": {"micro_batch_tokens": 1024}})
    groups = make_groups(n_groups, group_size)
    ours_s, ours_tokens, waste = bench_ours(cfg, groups, steps)
    hf_s, hf_tokens = bench_hf(cfg.model.path, groups, steps, batch=8)
    ours_tps, hf_tps = ours_tokens / ours_s, hf_tokens / hf_s
    return {"sequences_per_step": n_groups * group_size, "steps": steps, "threads": torch.get_num_threads(),
            "tokens_per_s": ours_tps, "hf_tokens_per_s": hf_tps, "ratio_vs_hf_training": ours_tps / hf_tps,
            "padding_waste": waste,
            "note": "padding_waste = unused fraction of the packed micro-batch token budget (no pad tokens are "
                    "computed); the HF loop pads each batch of 8 to its longest sequence"}
