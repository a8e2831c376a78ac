"""The Megatron-core policy on CPU: the shim's gating and scope, packed forward (block-diagonal mask, position
reset), the schedule path against forward_logprobs, clear errors on bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

from slime_rl.config import TrainerConfig
from slime_rl.trainer import megatron_shim
from slime_rl.trainer.optimizer import torch_optimizers
from slime_rl.trainer.parallel import init_parallel
from slime_rl.trainer.policy import MegatronPolicy, packed_causal_mask


@pytest.fixture(scope="module")
def parallel():
    torch.set_num_threads(2)
    init_parallel()


def _ref_logprobs(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = hf(ids[None]).logits[0, :-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, ids[1:, None])[:, 0]


def test_shim_does_nothing_when_cuda_is_available():
    """In a fresh interpreter that reports CUDA, activate() declines and patches nothing."""
    script = textwrap.dedent("""
        import torch
        torch.cuda.is_available = lambda: True
        real_type, real_cuda = torch.Tensor.type, torch.Tensor.cuda
        import megatron.core.optimizer.clip_grads as clip_grads
        import megatron.core.tensor_parallel.random as mp_random
        real_get = mp_random._get_cuda_rng_state
        from slime_rl.trainer import megatron_shim
        assert megatron_shim.activate() is False and not megatron_shim.is_active()
        assert torch.Tensor.type is real_type and torch.Tensor.cuda is real_cuda
        assert clip_grads.torch is torch and mp_random._get_cuda_rng_state is real_get
        print("untouched")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "untouched" in out.stdout


def test_shim_is_active_without_cuda_and_scoped_to_megatron(parallel):
    assert megatron_shim.is_active() == (not torch.cuda.is_available())
    if torch.cuda.is_available():
        return
    import megatron.core.optimizer.clip_grads as clip_grads

    assert clip_grads.torch is not torch  # megatron sees the CPU proxy
    assert clip_grads.torch.zeros(1, device="cuda").device.type == "cpu"
    assert clip_grads.torch.cuda.current_device() == torch.device("cpu")
    x = torch.zeros(2)
    assert x.type() == "torch.FloatTensor"  # unchanged outside megatron
    scope = {"__name__": "megatron.core.fake", "x": x}
    exec("name = x.type()", scope)
    assert scope["name"] == "torch.cuda.FloatTensor"
    assert x.cuda() is x


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
            alone = policy.forward_logprobs(s[None], torch.arange(len(s))[None], torch.tensor([0, len(s)]))[0]
            assert torch.allclose(out[start : start + len(s)], alone, atol=1e-5)
            assert torch.allclose(out[start : start + len(s) - 1], _ref_logprobs(hf, s), atol=1e-5)
            assert out[start + len(s) - 1] == 0.0


def test_packed_mask_blocks_cross_sequence_attention():
    mask = packed_causal_mask(torch.tensor([0, 2, 5]), 5)[0, 0]
    allowed = ~mask
    assert allowed[1, 0] and not allowed[0, 1]  # causal inside the first sequence
    assert not allowed[2, 1] and not allowed[4, 0]  # nothing across sequences
    assert allowed[4, 2] and allowed[4, 4]
    with pytest.raises(ValueError, match="covers 5 tokens"):
        packed_causal_mask(torch.tensor([0, 2, 5]), 6)
    with pytest.raises(ValueError, match="strictly increase"):
        packed_causal_mask(torch.tensor([0, 3, 3, 5]), 5)


def test_a_branch_sees_its_shared_prefix_and_itself_only():
    # segments: prefix [0, 2), branch A [2, 4), branch B [4, 6), both continuing the prefix
    allowed = ~packed_causal_mask(torch.tensor([0, 2, 4, 6]), 6, torch.tensor([-1, 0, 0]))[0, 0]
    assert allowed[3, 0] and allowed[3, 1] and allowed[3, 2] and allowed[5, 0] and allowed[5, 4]
    assert not allowed[4, 2] and not allowed[4, 3] and not allowed[5, 3]  # branches never see each other
    assert not allowed[1, 2] and not allowed[2, 3]  # still causal
    with pytest.raises(ValueError, match="earlier segment"):
        packed_causal_mask(torch.tensor([0, 2, 4, 6]), 6, torch.tensor([-1, 2, 0]))


def test_forward_backward_schedule_matches_forward_logprobs(parallel, tiny_model_path):
    """The schedule path (what pipeline parallel uses) gives the same logprobs and gradients as a plain backward."""
    policy = MegatronPolicy.from_hf(tiny_model_path, TrainerConfig(lr=1e-3))
    batches = [
        (torch.tensor([[3, 4, 5, 6]]), torch.tensor([[0, 1, 2, 3]]), torch.tensor([0, 4])),
        (torch.tensor([[9, 8, 7, 1, 2]]), torch.tensor([[0, 1, 2, 0, 1]]), torch.tensor([0, 3, 5])),
    ]
    for b in batches:
        (-policy.forward_logprobs(*b).sum()).backward()
    plain = [p.main_grad.clone() for p in policy.model.parameters()]
    policy.model.zero_grad_buffer()
    metrics = policy.forward_backward(batches, lambda lp, k: (-lp.sum(), {"lp": lp.detach()}))
    for p, g in zip(policy.model.parameters(), plain):
        assert torch.allclose(p.main_grad, g, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(metrics[1]["lp"], policy.forward_logprobs(*batches[1]), atol=1e-6)
    assert policy.optimizer_step()["grad_norm"] > 0


def test_adam_steps_with_torchs_fused_kernel_and_the_usual_update(parallel, tiny_model_path):
    """The optimizer runs torch's fused Adam on CPU, and two steps move each weight exactly as torch's reference
    (single-tensor) AdamW does with the same gradients."""
    cfg = TrainerConfig(lr=1e-2, weight_decay=0.1, grad_clip=0.0)
    policy = MegatronPolicy.from_hf(tiny_model_path, cfg)
    groups = [g for inner in torch_optimizers(policy.optimizer) for g in inner.param_groups]
    assert groups and all(g["fused"] and not g["foreach"] for g in groups)
    params = [p for g in groups for p in g["params"]]
    initial = [p.detach().clone() for p in params]
    shadow = [p.detach().clone().requires_grad_() for p in params]
    ref = torch.optim.AdamW(
        shadow, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay, foreach=False
    )
    batch = (torch.tensor([[3, 4, 5, 6, 9]]), torch.tensor([[0, 1, 2, 3, 4]]), torch.tensor([0, 5]))
    for _ in range(2):
        (-policy.forward_logprobs(*batch).sum()).backward()
        for p, s in zip(params, shadow):
            s.grad = p.main_grad.detach().clone()
        policy.optimizer_step()
        ref.step()
        for p, s in zip(params, shadow):
            assert torch.allclose(p, s, atol=1e-6), "fused Adam diverged from torch's reference AdamW"
    assert all(not torch.equal(p, p0) for p, p0 in zip(params, initial))  # the steps did move every weight


def test_bad_input_is_named(parallel, tiny_model_path):
    policy = MegatronPolicy.from_hf(tiny_model_path, TrainerConfig())
    with pytest.raises(ValueError, match=r"must both be \[1, T\]"):
        policy.forward_logprobs(torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2]), torch.tensor([0, 3]))


def test_bfloat16_policy_trains_in_mixed_precision(parallel, tiny_model_path):
    """bfloat16 weights for the forward and backward, float32 main weights in the optimizer: logprobs stay near the
    float32 model's, and steps that raise a sequence's likelihood do raise it."""
    policy = MegatronPolicy.from_hf(tiny_model_path, TrainerConfig(lr=1e-2, grad_clip=0.0), dtype=torch.bfloat16)
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    assert {
        p.dtype for inner in torch_optimizers(policy.optimizer) for g in inner.param_groups for p in g["params"]
    } == {torch.float32}
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    seq = torch.tensor([5, 17, 300, 41, 9, 77, 3])
    batch = (seq[None], torch.arange(len(seq))[None], torch.tensor([0, len(seq)]))
    with torch.no_grad():
        before = policy.forward_logprobs(*batch)[0, :-1]
    assert before.dtype == torch.float32
    assert torch.allclose(before, _ref_logprobs(hf, seq), atol=0.05)
    for _ in range(3):
        policy.forward_backward([batch], lambda lp, k: (-lp.sum(), {}))
        assert policy.optimizer_step()["update_skipped"] == 0.0
    with torch.no_grad():
        after = policy.forward_logprobs(*batch)[0, :-1]
    assert after.sum() > before.sum() + 1.0
    assert {t.dtype for t in policy.megatron_state_dict().values()} == {torch.bfloat16}
