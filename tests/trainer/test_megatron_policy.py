"""The Megatron-core policy on CPU against transformers: conversion parity, packing, round trip, checkpoints."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from slime_rl.config import TrainerConfig
from slime_rl.trainer.checkpoint import export_hf, latest_checkpoint, load_checkpoint, save_checkpoint
from slime_rl.trainer.megatron_shim import is_active
from slime_rl.trainer.parallel import init_parallel
from slime_rl.trainer.policy import MegatronPolicy, packed_causal_mask


@pytest.fixture(scope="module")
def parallel():
    init_parallel()


def _ref_logprobs(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = hf(ids[None]).logits[0, :-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, ids[1:, None])[:, 0]


def test_shim_is_active_only_without_cuda(parallel):
    assert is_active() == (not torch.cuda.is_available())


def test_real_model_logits_match_transformers_and_round_trip_is_exact(parallel, real_model_path):
    policy = MegatronPolicy.from_hf(real_model_path, TrainerConfig())
    hf = AutoModelForCausalLM.from_pretrained(real_model_path, dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 314, 1345, 30, 216, 355, 2, 17, 18, 19, 20, 2143, 44]])
    with torch.no_grad():
        ref = hf(ids).logits
        out = policy.model(ids, torch.arange(ids.shape[1])[None], attention_mask=None)
    assert (ref - out).abs().max().item() <= 1e-3
    assert torch.equal(ref.argmax(-1), out.argmax(-1))
    exported = policy.export_hf_state_dict()
    original = hf.state_dict()
    for name, tensor in exported.items():
        assert torch.equal(tensor, original[name]), name
    assert set(original) - set(exported) <= {"lm_head.weight"}  # tied to the embeddings


def test_packed_logprobs_equal_each_sequence_alone(parallel, tiny_model_path):
    policy = MegatronPolicy.from_hf(tiny_model_path, TrainerConfig())
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    seqs = [torch.tensor([5, 17, 300, 41, 9]), torch.tensor([7, 8]), torch.tensor([100, 200, 300, 400])]
    tokens = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    cu = torch.tensor([0, 5, 7, 11])
    with torch.no_grad():
        out = policy.forward_logprobs(tokens, pos, cu)[0]
    for s, start in zip(seqs, cu[:-1].tolist()):
        ref = _ref_logprobs(hf, s)
        assert torch.allclose(out[start:start + len(s) - 1], ref, atol=1e-5)
        assert out[start + len(s) - 1] == 0.0


def test_packed_mask_blocks_cross_sequence_attention():
    mask = packed_causal_mask(torch.tensor([0, 2, 5]), 5)[0, 0]
    allowed = ~mask
    assert allowed[1, 0] and not allowed[0, 1]  # causal inside the first sequence
    assert not allowed[2, 1] and not allowed[4, 0]  # nothing across sequences
    assert allowed[4, 2] and allowed[4, 4]


def test_exported_checkpoint_loads_in_transformers_with_same_logits(parallel, tiny_model_path, tmp_path):
    policy = MegatronPolicy.from_hf(tiny_model_path, TrainerConfig(lr=1e-2))
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    loss = -policy.forward_logprobs(ids, torch.arange(5)[None], torch.tensor([0, 5])).sum()
    loss.backward()
    policy.optimizer_step()  # weights now differ from the original checkpoint
    export_hf(policy, tmp_path / "hf")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    with torch.no_grad():
        ours = policy.model(ids, torch.arange(5)[None], attention_mask=None)
        theirs = reloaded(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def _one_step(policy, ids):
    lp = policy.forward_logprobs(ids, torch.arange(ids.shape[1])[None], torch.tensor([0, ids.shape[1]]))
    loss = -lp.sum()
    loss.backward()
    policy.optimizer_step()
    return loss.item()


def test_resume_gives_the_same_next_step(parallel, tiny_model_path, tmp_path):
    ids = torch.tensor([[11, 12, 13, 14, 15, 16]])
    cfg = TrainerConfig(lr=1e-2)
    a = MegatronPolicy.from_hf(tiny_model_path, cfg)
    _one_step(a, ids)
    save_checkpoint(a, tmp_path / "ckpt", step=1, version=1, extra={"note": "x"})
    loss_a = _one_step(a, ids)
    b = MegatronPolicy.from_hf(tiny_model_path, cfg)
    meta = load_checkpoint(b, latest_checkpoint(tmp_path / "ckpt"))
    assert meta == {"step": 1, "version": 1, "extra": {"note": "x"}}
    loss_b = _one_step(b, ids)
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    for (name, pa), pb in zip(a.megatron_state_dict().items(), b.megatron_state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-6), name
