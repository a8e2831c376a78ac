"""A Megatron-core GPTModel (local layer spec) configured like a Hugging Face Llama: RMSNorm, SwiGLU, RoPE with the
HF rope_theta, GQA, tied or untied embeddings, no biases. Needs the parallel state (trainer.parallel) first."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import megatron_shim
from .convert import LlamaShape


def rope_theta(hf_cfg) -> float:
    params = getattr(hf_cfg, "rope_parameters", None) or getattr(hf_cfg, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in (None, "default"):
        raise ValueError(f"model config: rope scaling {kind!r} is not supported by the Megatron backend")
    return float(params.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0)))


def check_supported(hf_cfg) -> None:
    """Reject configs the conversion would silently get wrong."""
    if getattr(hf_cfg, "model_type", "llama") != "llama":
        raise ValueError(f"model config: model_type {hf_cfg.model_type!r} is not a Llama-family model")
    if getattr(hf_cfg, "attention_bias", False) or getattr(hf_cfg, "mlp_bias", False):
        raise ValueError("model config: attention_bias / mlp_bias are not supported (Llama has no biases)")
    if getattr(hf_cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"model config: hidden_act {hf_cfg.hidden_act!r} is not SwiGLU (silu)")


def transformer_config(hf_cfg, dtype: torch.dtype):
    from megatron.core import parallel_state
    from megatron.core.transformer.transformer_config import TransformerConfig

    shape = LlamaShape.from_hf_config(hf_cfg)
    return TransformerConfig(
        num_layers=shape.num_layers,
        hidden_size=hf_cfg.hidden_size,
        ffn_hidden_size=hf_cfg.intermediate_size,
        num_attention_heads=shape.num_heads,
        num_query_groups=shape.num_kv_heads,
        kv_channels=shape.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=hf_cfg.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        pipeline_dtype=dtype,
        use_cpu_initialization=not torch.cuda.is_available(),
        # the fused kernels need apex / TransformerEngine / CUDA
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        tensor_model_parallel_size=parallel_state.get_tensor_model_parallel_world_size(),
        pipeline_model_parallel_size=parallel_state.get_pipeline_model_parallel_world_size(),
        # packed micro-batches differ in length: pipeline stages exchange shapes before activations
        variable_seq_lengths=parallel_state.get_pipeline_model_parallel_world_size() > 1,
        moe_token_dispatcher_type="alltoall",  # no MoE; the default (allgather) rejects variable_seq_lengths
        # RoPE at each token's own position (see rope_positions): Megatron's plain "rope" rotates by row index
        mrope_section=[shape.head_dim // 2, 0, 0],
    )


def build_gpt_model(hf_cfg, dtype: torch.dtype = torch.float32):
    """This rank's GPTModel (its pipeline stage, its tensor-parallel shard), randomly initialised."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel

    megatron_shim.activate()
    check_supported(hf_cfg)
    shape = LlamaShape.from_hf_config(hf_cfg)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    if hf_cfg.vocab_size % tp or shape.num_kv_heads % tp or hf_cfg.intermediate_size % tp:
        raise ValueError(
            f"model config: vocab_size {hf_cfg.vocab_size}, num_key_value_heads {shape.num_kv_heads} "
            f"and intermediate_size {hf_cfg.intermediate_size} must divide by tensor parallel {tp}"
        )
    if shape.num_layers % pp:
        raise ValueError(f"model config: {shape.num_layers} layers do not split into {pp} pipeline stages")
    model = GPTModel(
        config=transformer_config(hf_cfg, dtype),
        transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
        vocab_size=hf_cfg.vocab_size,
        max_sequence_length=hf_cfg.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=shape.tied,
        position_embedding_type="mrope",
        rotary_base=rope_theta(hf_cfg),
    )
    if dtype != torch.float32:  # the torch RMSNorm fallback ignores params_dtype; keep every weight in one dtype
        model = model.to(dtype)
    return model.to(torch.cuda.current_device()) if torch.cuda.is_available() else model


def rope_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """[1, T] positions -> the [3, 1, T] Megatron's multimodal RoPE takes. With mrope_section [head_dim / 2, 0, 0]
    only the first row is used, which is plain RoPE at the given positions: what a packed row needs when a branch
    continues a shared prompt (row index != position), and harmless otherwise."""
    return position_ids.expand(3, *position_ids.shape)


def packed_causal_mask(cu_seqlens: torch.Tensor, total: int, prefix_of: torch.Tensor | None = None) -> torch.Tensor:
    """[1, 1, T, T] boolean mask, True = masked: causal within each segment, nothing across segments, except that
    a segment sees all of the segment it continues (prefix_of[s], -1 for none; it must come earlier in the row)."""
    lengths = cu_seqlens.diff()
    if cu_seqlens[0] != 0 or (lengths <= 0).any():
        raise ValueError(f"cu_seqlens must start at 0 and strictly increase, got {cu_seqlens.tolist()}")
    seq_id = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)
    if len(seq_id) != total:
        raise ValueError(f"cu_seqlens covers {len(seq_id)} tokens, the batch has {total}")
    allowed = seq_id[:, None] == seq_id[None, :]
    if prefix_of is not None:
        prefix_of = prefix_of.to(cu_seqlens.device)
        if len(prefix_of) != len(lengths) or (prefix_of >= torch.arange(len(lengths), device=prefix_of.device)).any():
            raise ValueError(
                f"prefix_of must name an earlier segment (or -1) for each of the {len(lengths)} "
                f"segments, got {prefix_of.tolist()}"
            )
        allowed |= prefix_of[seq_id][:, None] == seq_id[None, :]
    causal = torch.ones(total, total, dtype=torch.bool, device=cu_seqlens.device).tril()
    return ~(allowed & causal)[None, None]
