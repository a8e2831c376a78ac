"""`slime-rl bench trainer`: our packed Megatron train step against a plain transformers training loop, same model
(SmolLM2-135M-Instruct, fp32), same trajectories, same optimizer settings, same threads, measured step by step in
alternation in one run. The transformers loop is written the usual way: batches of `hf_batch` sequences in data
order, right-padded to the longest, attention mask, masked policy-gradient loss. Tokens/s counts the sequences'
real tokens on both sides (no padding; a group's shared prompt counts once per sequence, though ours packs it once).

padding_waste (ours) is the padding a fixed-shape [micro-batches, longest] tensor of our packed rows would hold
(the rows themselves hold none); hf_padding_waste is the fraction of pad tokens the transformers loop computes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from slime_rl.config import RunConfig
from slime_rl.results import UpdateStats
from slime_rl.trajectory import Trajectory, TrajectoryGroup


def make_groups(n_groups: int, group_size: int, seed: int = 0, vocab: int = 40000) -> list[TrajectoryGroup]:
    """Shared prompt per group, responses with the long-tailed lengths RL rollouts have."""
    rng = np.random.default_rng(seed)
    groups = []
    for g in range(n_groups):
        prompt = rng.integers(100, vocab, int(rng.integers(30, 80))).tolist()
        trajs = []
        for _ in range(group_size):
            n = int(np.clip(rng.lognormal(np.log(60), 0.8), 8, 400))
            trajs.append(
                Trajectory(
                    group_id=f"g{g}",
                    prompt_ids=prompt,
                    response_ids=rng.integers(100, vocab, n).tolist(),
                    loss_mask=[1] * n,
                    rollout_logprobs=(-rng.random(n) * 3).tolist(),
                    versions=[0] * n,
                    reward=float(rng.random() > 0.5),
                )
            )
        groups.append(TrajectoryGroup(group_id=f"g{g}", trajectories=trajs))
    return groups


class Ours:
    def __init__(self, cfg: RunConfig):
        from slime_rl.trainer.parallel import init_parallel
        from slime_rl.trainer.policy import MegatronPolicy

        init_parallel()
        self.cfg, self.policy = cfg, MegatronPolicy.from_hf(cfg.model.path, cfg.trainer)
        self.update: UpdateStats | None = None

    def step(self, groups: list[TrajectoryGroup]) -> int:
        from slime_rl.trainer.train_step import train_step

        self.update = train_step(self.policy, groups, 0, self.cfg).update
        # the sequences' tokens, as for the transformers loop: a prompt shared by a group is packed once
        # (update.tokens counts the packed row), but it is trained for every sequence that has it
        return sum(t.num_tokens for g in groups for t in g.trajectories)


class HFLoop:
    def __init__(self, cfg: RunConfig, batch: int):
        from transformers import AutoModelForCausalLM

        t = cfg.trainer
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=torch.float32).to(self.device)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay
        )
        self.clip, self.batch, self.pad_slots, self.slots = t.grad_clip, batch, 0, 0

    def step(self, groups: list[TrajectoryGroup]) -> int:
        from slime_rl.trainer.advantages import grpo

        trajs = [t for g in groups for t in g.trajectories]
        advs = [a for g in groups for a in grpo([t.reward for t in g.trajectories])]
        n_loss = sum(len(t.response_ids) for t in trajs)
        for i in range(0, len(trajs), self.batch):
            chunk, adv = trajs[i : i + self.batch], torch.tensor(advs[i : i + self.batch], device=self.device)
            seqs = [t.prompt_ids + t.response_ids for t in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs], device=self.device)
            attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
            resp = torch.zeros_like(ids, dtype=torch.float32)  # 1 on the response tokens (the loss tokens)
            for r, t in enumerate(chunk):
                resp[r, len(t.prompt_ids) : len(seqs[r])] = 1.0
            logits = self.model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
            (-(adv[:, None] * logp * resp[:, 1:]).sum() / n_loss).backward()
            self.pad_slots += int((attn == 0).sum())
            self.slots += attn.numel()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad()
        return sum(len(s) for s in (t.prompt_ids + t.response_ids for t in trajs))


def _model_path() -> Path:
    from slime_rl.model_store import DEFAULT_OUT, convert, is_converted

    if not is_converted(DEFAULT_OUT):
        convert(DEFAULT_OUT)
    return DEFAULT_OUT


def run(quick: bool = False) -> dict:
    n_groups, group_size, steps = (2, 4, 1) if quick else (3, 8, 2)
    threads = torch.get_num_threads()
    cfg = RunConfig.model_validate(
        {"model": {"path": str(_model_path())}, "trainer": {"micro_batch_tokens": 1024, "lr": 1e-6}}
    )
    batches = [make_groups(n_groups, group_size, seed=s) for s in range(steps + 1)]
    ours, hf = Ours(cfg), HFLoop(cfg, batch=8)
    ours.step(batches[0])  # warm-up (allocations, first-touch)
    hf.step(batches[0])
    hf.pad_slots = hf.slots = 0
    times = {"ours": 0.0, "hf": 0.0}
    tokens = {"ours": 0, "hf": 0}
    waste, fill, micro = [], [], []
    for groups in batches[1:]:  # alternate, so load changes on a shared machine hit both alike
        for name, runner in (("ours", ours), ("hf", hf)):
            t0 = time.perf_counter()
            tokens[name] += runner.step(groups)
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # GPU work is queued: time it to the end
            times[name] += time.perf_counter() - t0
        waste.append(ours.update.padding_waste)
        fill.append(ours.update.budget_fill)
        micro.append(ours.update.micro_batches)
    ours_tps, hf_tps = tokens["ours"] / times["ours"], tokens["hf"] / times["hf"]
    return {
        "model": Path(cfg.model.path).name,
        "sequences_per_step": n_groups * group_size,
        "steps": steps,
        "tokens_per_step": tokens["ours"] / steps,
        "threads": threads,
        "micro_batch_tokens": cfg.trainer.micro_batch_tokens,
        "micro_batches_per_step": float(np.mean(micro)),
        "tokens_per_s": ours_tps,
        "hf_tokens_per_s": hf_tps,
        "ratio_vs_hf_training": ours_tps / hf_tps,
        "padding_waste": float(np.mean(waste)),
        "budget_fill": float(np.mean(fill)),
        "hf_padding_waste": hf.pad_slots / max(hf.slots, 1),
        "hf_batch": hf.batch,
    }
