"""HF Llama <-> Megatron conversion: SmolLM2-135M logits against transformers, exact round trips (whole model, TP
shards, pipeline stages), and an HF export that transformers loads with the same logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from slime_rl.config import TrainerConfig
from slime_rl.trainer.checkpoint import export_hf
from slime_rl.trainer.convert import (
    LlamaShape,
    hf_to_megatron,
    megatron_to_hf,
    merge_stages,
    select_stage,
    shard_for_rank,
    unshard,
)
from slime_rl.trainer.megatron_model import rope_positions
from slime_rl.trainer.parallel import init_parallel
from slime_rl.trainer.policy import MegatronPolicy, load_hf_weights

PROMPTS = [
    [1, 504, 3458, 314, 1345, 30, 216, 355, 2, 17, 18, 19, 20, 2143, 44],
    [1, 9690, 28, 2683, 314, 260, 3575, 282, 4649, 47],
    [2, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40],
]


@pytest.fixture(scope="module")
def parallel():
    torch.set_num_threads(2)
    init_parallel()


def test_real_model_logits_match_transformers_and_round_trip_is_exact(parallel, real_model_path):
    policy = MegatronPolicy.from_hf(real_model_path, TrainerConfig())
    hf = AutoModelForCausalLM.from_pretrained(real_model_path, dtype=torch.float32)
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            ref = hf(ids).logits
            out = policy.model(ids, rope_positions(torch.arange(ids.shape[1])[None]), attention_mask=None)
        assert (ref - out).abs().max().item() <= 1e-3
        assert torch.equal(ref.argmax(-1), out.argmax(-1))
    exported = policy.export_hf_state_dict()
    original = load_hf_weights(real_model_path)
    assert set(exported) == set(original) - {"lm_head.weight"}  # tied: transformers drops lm_head too
    for name, tensor in exported.items():
        assert tensor.dtype == original[name].dtype and torch.equal(tensor, original[name]), name


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2), (2, 2)])
def test_tp_and_pp_split_round_trip_is_exact(tiny_model_path, tp, pp):
    # the tiny Llama has the real one's layout (GQA, tied embeddings) at a size that loads in milliseconds
    shape = LlamaShape.from_hf_config(AutoConfig.from_pretrained(tiny_model_path))
    original = load_hf_weights(tiny_model_path)
    full = hf_to_megatron(original, shape)
    stages = []
    for stage in range(pp):
        part = select_stage(full, shape, pp, stage)
        shards = [shard_for_rank(part, tp, r) for r in range(tp)]
        if tp > 1:  # each shard really is 1/tp of the split tensors
            qkv = "decoder.layers.0.self_attention.linear_qkv.weight"
            if qkv in part:
                assert shards[0][qkv].shape[0] * tp == part[qkv].shape[0]
        stages.append(unshard(shards))
    back = megatron_to_hf(merge_stages(stages, shape), shape)
    assert set(back) == set(original) - {"lm_head.weight"}
    for name, tensor in back.items():
        assert torch.equal(tensor, original[name]), name


def test_qkv_grouping_puts_each_kv_group_together(tiny_model_path):
    """linear_qkv rows: [q heads of group g, k_g, v_g] for each KV group g (what megatron's attention expects)."""
    cfg = AutoConfig.from_pretrained(tiny_model_path)
    s = LlamaShape.from_hf_config(cfg)
    hf = load_hf_weights(tiny_model_path)
    qkv = hf_to_megatron(hf, s)["decoder.layers.1.self_attention.linear_qkv.weight"]
    per_group, d = s.num_heads // s.num_kv_heads, s.head_dim
    block = (per_group + 2) * d
    g = 1
    rows = qkv[g * block : (g + 1) * block]
    q = hf["model.layers.1.self_attn.q_proj.weight"][g * per_group * d : (g + 1) * per_group * d]
    assert torch.equal(rows[: per_group * d], q)
    k, v = hf["model.layers.1.self_attn.k_proj.weight"], hf["model.layers.1.self_attn.v_proj.weight"]
    assert torch.equal(rows[per_group * d : per_group * d + d], k[g * d : (g + 1) * d])
    assert torch.equal(rows[-d:], v[g * d : (g + 1) * d])


def test_untied_model_converts_lm_head():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg)
    s = LlamaShape.from_hf_config(cfg)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mg = hf_to_megatron(original, s)
    assert torch.equal(mg["output_layer.weight"], original["lm_head.weight"])
    back = megatron_to_hf(mg, s)
    assert set(back) == set(original) and all(torch.equal(back[k], original[k]) for k in back)


def test_exported_hf_safetensors_load_in_transformers_with_same_logits(parallel, tiny_model_path, tmp_path):
    policy = MegatronPolicy.from_hf(tiny_model_path, TrainerConfig(lr=1e-2))
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    loss = -policy.forward_logprobs(ids, torch.arange(5)[None], torch.tensor([0, 5])).sum()
    loss.backward()
    policy.optimizer_step()  # weights now differ from the original checkpoint
    export_hf(policy, tmp_path / "hf")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    with torch.no_grad():
        ours = policy.model(ids, rope_positions(torch.arange(5)[None]), attention_mask=None)
        theirs = reloaded(ids).logits
        before = original(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(before, theirs, atol=1e-3)  # the export carries the trained weights
