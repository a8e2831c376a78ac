"""Megatron distributed checkpoints: resume gives the same next step as an uninterrupted run (one process, and TP2 /
DP2 with the distributed optimizer over gloo), counters and extra state come back, writes are atomic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from transformers import AutoModelForCausalLM

from slime_rl.config import TrainerConfig
from slime_rl.net import free_port
from slime_rl.trainer.checkpoint import latest_checkpoint
from slime_rl.trainer.megatron_model import rope_positions
from slime_rl.trainer.parallel import init_parallel
from slime_rl.trainer.policy import MegatronPolicy

IDS = torch.tensor([[11, 12, 13, 14, 15, 16, 40, 41, 42]])
POS = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2]])
CU = torch.tensor([0, 6, 9])


@pytest.fixture(scope="module")
def parallel():
    torch.set_num_threads(2)
    init_parallel()


def _one_step(policy: MegatronPolicy) -> float:
    loss = -policy.forward_logprobs(IDS, POS, CU).sum() / 10
    loss.backward()
    policy.optimizer_step()
    return loss.item()


def test_resume_gives_the_same_next_step(parallel, tiny_model_path, tmp_path):
    cfg = TrainerConfig(lr=1e-2)
    a = MegatronPolicy.from_hf(tiny_model_path, cfg)
    _one_step(a)
    path = a.save_checkpoint(tmp_path / "ckpt", step=1, version=3, extra={"buffer": {"entry_ids": ["1-0"]}})
    rng_after_save = torch.get_rng_state()
    loss_a = _one_step(a)
    _one_step(a)  # a third step too: Adam moments must have been restored, not only weights

    b = MegatronPolicy.from_hf(tiny_model_path, cfg)
    torch.manual_seed(999)  # scramble the RNG: resume must restore it
    meta = b.load_checkpoint(tmp_path / "ckpt")  # a root resolves to its latest step
    assert meta == {"step": 1, "version": 3, "extra": {"buffer": {"entry_ids": ["1-0"]}}}
    assert torch.equal(torch.get_rng_state(), rng_after_save)
    assert _one_step(b) == loss_a
    _one_step(b)
    for (name, pa), pb in zip(a.megatron_state_dict().items(), b.megatron_state_dict().values()):
        assert torch.equal(pa, pb), name
    assert b.load_checkpoint(path)["step"] == 1  # a step folder works as well


def test_checkpoint_layout_is_atomic_and_exports_hf(parallel, tiny_model_path, tmp_path):
    policy = MegatronPolicy.from_hf(tiny_model_path, TrainerConfig(lr=1e-2))
    root = tmp_path / "ckpt"
    first = policy.save_checkpoint(root, step=2, version=2, extra={})
    # a crash while writing step 4 leaves only a temporary folder: readers still see step 2
    (root / ".step_000004.tmp" / "megatron").mkdir(parents=True)
    assert latest_checkpoint(root) == first
    assert policy.load_checkpoint(root)["step"] == 2
    _one_step(policy)
    second = policy.save_checkpoint(root, step=4, version=4, extra={"k": 1})
    assert latest_checkpoint(root) == second
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000002", "step_000004"]
    assert json.loads((second / "meta.json").read_text()) == {"step": 4, "version": 4, "extra": {"k": 1}}
    hf = AutoModelForCausalLM.from_pretrained(second / "hf", dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(
            hf(IDS[:, :6]).logits, policy.model(IDS[:, :6], rope_positions(POS[:, :6]), attention_mask=None), atol=1e-5
        )


def test_load_names_a_missing_checkpoint(parallel, tiny_model_path, tmp_path):
    policy = MegatronPolicy.from_hf(tiny_model_path, TrainerConfig())
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        policy.load_checkpoint(tmp_path)


def _resume_worker(rank: int, world: int, port: int, tp: int, dp: int, model: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from slime_rl.trainer.parallel import destroy_parallel

    init_parallel(tp, 1, dp, rank=rank, world_size=world, master_port=port)
    cfg = TrainerConfig(lr=1e-2, use_distributed_optimizer=dp > 1)
    a = MegatronPolicy.from_hf(model, cfg)
    _one_step(a)
    a.save_checkpoint(Path(out) / "ckpt", step=1, version=1, extra={"rank_independent": True})
    uninterrupted = [_one_step(a), _one_step(a)]
    b = MegatronPolicy.from_hf(model, cfg)
    meta = b.load_checkpoint(Path(out) / "ckpt")
    resumed = [_one_step(b), _one_step(b)]
    same = all(torch.equal(x, y) for x, y in zip(a.megatron_state_dict().values(), b.megatron_state_dict().values()))
    torch.save(
        {"meta": meta, "uninterrupted": uninterrupted, "resumed": resumed, "same_weights": same},
        Path(out) / f"rank{rank}.pt",
    )
    destroy_parallel()


@pytest.mark.slow
@pytest.mark.parametrize("tp,dp", [(2, 1), (1, 2)], ids=["tp2", "dp2-distributed-optimizer"])
def test_resume_under_tp2_and_dp2_distributed_optimizer(tiny_model_path, tmp_path, tp, dp):
    world = tp * dp
    mp.spawn(
        _resume_worker, args=(world, free_port(), tp, dp, str(tiny_model_path), str(tmp_path)), nprocs=world, join=True
    )
    for rank in range(world):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["meta"] == {"step": 1, "version": 1, "extra": {"rank_independent": True}}
        assert r["resumed"] == r["uninterrupted"] and r["same_weights"]
