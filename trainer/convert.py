"""Hugging Face Llama-family weights <-> Megatron-core GPTModel (local layer spec) weights.

Megatron fuses Q, K and V into `linear_qkv`, laid out per KV group: [q heads of group 0, k0, v0, q heads of group 1,
k1, v1, ...], and gate/up into `linear_fc1` = [gate; up]. Tensor parallelism splits linear_qkv by KV groups, gate and
up each by rows, linear_proj/linear_fc2 by columns, embeddings and the output layer by vocabulary rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class LlamaShape:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_hf_config(cls, c) -> LlamaShape:
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return cls(
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads or c.num_attention_heads,
            head_dim,
            bool(getattr(c, "tie_word_embeddings", False)),
        )


def hf_to_megatron(hf: dict[str, Tensor], s: LlamaShape) -> dict[str, Tensor]:
    out = {
        "embedding.word_embeddings.weight": hf["model.embed_tokens.weight"],
        "decoder.final_layernorm.weight": hf["model.norm.weight"],
    }
    if not s.tied:
        out["output_layer.weight"] = hf["lm_head.weight"]
    per_group = s.num_heads // s.num_kv_heads
    for i in range(s.num_layers):
        h, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        q = hf[h + "self_attn.q_proj.weight"].view(s.num_kv_heads, per_group * s.head_dim, -1)
        k = hf[h + "self_attn.k_proj.weight"].view(s.num_kv_heads, s.head_dim, -1)
        v = hf[h + "self_attn.v_proj.weight"].view(s.num_kv_heads, s.head_dim, -1)
        out[m + "self_attention.linear_qkv.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, q.shape[-1])
        out[m + "self_attention.linear_proj.weight"] = hf[h + "self_attn.o_proj.weight"]
        out[m + "input_layernorm.weight"] = hf[h + "input_layernorm.weight"]
        out[m + "pre_mlp_layernorm.weight"] = hf[h + "post_attention_layernorm.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat([hf[h + "mlp.gate_proj.weight"], hf[h + "mlp.up_proj.weight"]])
        out[m + "mlp.linear_fc2.weight"] = hf[h + "mlp.down_proj.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def megatron_to_hf(mg: dict[str, Tensor], s: LlamaShape) -> dict[str, Tensor]:
    out = {
        "model.embed_tokens.weight": mg["embedding.word_embeddings.weight"],
        "model.norm.weight": mg["decoder.final_layernorm.weight"],
    }
    if not s.tied:
        out["lm_head.weight"] = mg["output_layer.weight"]
    per_group = s.num_heads // s.num_kv_heads
    for i in range(s.num_layers):
        h, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        qkv = mg[m + "self_attention.linear_qkv.weight"]
        qkv = qkv.view(s.num_kv_heads, (per_group + 2) * s.head_dim, -1)
        q, k, v = qkv.split([per_group * s.head_dim, s.head_dim, s.head_dim], dim=1)
        hidden = qkv.shape[-1]
        out[h + "self_attn.q_proj.weight"] = q.reshape(-1, hidden)
        out[h + "self_attn.k_proj.weight"] = k.reshape(-1, hidden)
        out[h + "self_attn.v_proj.weight"] = v.reshape(-1, hidden)
        out[h + "self_attn.o_proj.weight"] = mg[m + "self_attention.linear_proj.weight"]
        out[h + "input_layernorm.weight"] = mg[m + "input_layernorm.weight"]
        out[h + "post_attention_layernorm.weight"] = mg[m + "pre_mlp_layernorm.weight"]
        gate, up = mg[m + "mlp.linear_fc1.weight"].chunk(2)
        out[h + "mlp.gate_proj.weight"] = gate
        out[h + "mlp.up_proj.weight"] = up
        out[h + "mlp.down_proj.weight"] = mg[m + "mlp.linear_fc2.weight"]
    return {k: v.contiguous() for k, v in out.items()}


# --- tensor parallel sharding of a full Megatron state dict ------------------------------------------------
def _split_rows(t: Tensor, tp: int, rank: int) -> Tensor:
    return t.chunk(tp, dim=0)[rank]


def shard_for_rank(full: dict[str, Tensor], tp: int, rank: int) -> dict[str, Tensor]:
    if tp == 1:
        return full
    out = {}
    for name, t in full.items():
        if name.endswith(("linear_qkv.weight", "word_embeddings.weight", "output_layer.weight")):
            out[name] = _split_rows(t, tp, rank)  # qkv rows are grouped by KV group, so a row split is per group
        elif name.endswith("linear_fc1.weight"):
            gate, up = t.chunk(2)
            out[name] = torch.cat([_split_rows(gate, tp, rank), _split_rows(up, tp, rank)])
        elif name.endswith(("linear_proj.weight", "linear_fc2.weight")):
            out[name] = t.chunk(tp, dim=1)[rank]
        else:
            out[name] = t
    return {k: v.contiguous() for k, v in out.items()}


def unshard(shards: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Inverse of shard_for_rank: shards[r] is rank r's state dict."""
    tp = len(shards)
    if tp == 1:
        return shards[0]
    out = {}
    for name in shards[0]:
        parts = [s[name] for s in shards]
        if name.endswith(("linear_qkv.weight", "word_embeddings.weight", "output_layer.weight")):
            out[name] = torch.cat(parts)
        elif name.endswith("linear_fc1.weight"):
            gates, ups = zip(*(p.chunk(2) for p in parts))
            out[name] = torch.cat([*gates, *ups])
        elif name.endswith(("linear_proj.weight", "linear_fc2.weight")):
            out[name] = torch.cat(parts, dim=1)
        else:
            out[name] = parts[0]
    return out


# --- pipeline stages: each stage holds a contiguous run of layers, numbered from 0 inside the stage -----------
def _layer_index(name: str) -> int | None:
    if not name.startswith("decoder.layers."):
        return None
    return int(name.split(".")[2])


def _renumber(name: str, new: int) -> str:
    parts = name.split(".")
    parts[2] = str(new)
    return ".".join(parts)


def select_stage(full: dict[str, Tensor], s: LlamaShape, pp: int, stage: int) -> dict[str, Tensor]:
    """The part of a full Megatron state dict that pipeline stage `stage` of `pp` holds."""
    if pp == 1:
        return full
    per = s.num_layers // pp
    out = {}
    for name, t in full.items():
        i = _layer_index(name)
        if i is not None:
            if stage * per <= i < (stage + 1) * per:
                out[_renumber(name, i - stage * per)] = t
        elif name.startswith("embedding.") and stage == 0:
            out[name] = t
        elif name.startswith(("decoder.final_layernorm", "output_layer")) and stage == pp - 1:
            out[name] = t
    if stage == pp - 1 and s.tied:  # the last stage keeps its own copy of the tied embedding as output layer
        out["output_layer.weight"] = full["embedding.word_embeddings.weight"]
    return out


def merge_stages(stages: list[dict[str, Tensor]], s: LlamaShape) -> dict[str, Tensor]:
    """Inverse of select_stage: stages[k] is pipeline stage k's state dict."""
    if len(stages) == 1:
        return stages[0]
    per = s.num_layers // len(stages)
    out: dict[str, Tensor] = {}
    for k, part in enumerate(stages):
        for name, t in part.items():
            i = _layer_index(name)
            if i is not None:
                out[_renumber(name, i + k * per)] = t
            elif not (s.tied and name == "output_layer.weight"):
                out[name] = t
    return out
