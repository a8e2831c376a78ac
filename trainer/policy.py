"""The policy as a Megatron-core GPTModel: built from a Hugging Face Llama config, loaded from its safetensors,
wrapped in Megatron DDP with a Megatron optimizer, and exported back to HF names for the relay."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from slime_rl.config import TrainerConfig

from . import megatron_shim
from .convert import LlamaShape, hf_to_megatron, megatron_to_hf, shard_for_rank, unshard


def transformer_config(hf_cfg, dtype: torch.dtype):
    from megatron.core.transformer.transformer_config import TransformerConfig

    shape = LlamaShape.from_hf_config(hf_cfg)
    return TransformerConfig(
        num_layers=shape.num_layers, hidden_size=hf_cfg.hidden_size, ffn_hidden_size=hf_cfg.intermediate_size,
        num_attention_heads=shape.num_heads, num_query_groups=shape.num_kv_heads, kv_channels=shape.head_dim,
        normalization="RMSNorm", layernorm_epsilon=hf_cfg.rms_norm_eps, gated_linear_unit=True,
        activation_func=F.silu, add_bias_linear=False, add_qkv_bias=False, attention_dropout=0.0, hidden_dropout=0.0,
        params_dtype=dtype, bf16=dtype == torch.bfloat16, use_cpu_initialization=not torch.cuda.is_available(),
        bias_dropout_fusion=False, apply_rope_fusion=False, masked_softmax_fusion=False,
        gradient_accumulation_fusion=False, persist_layer_norm=False,
        tensor_model_parallel_size=_tp_size(), pipeline_model_parallel_size=1,
    )


def _tp_size() -> int:
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_world_size()


def _rope_theta(hf_cfg) -> float:
    params = getattr(hf_cfg, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0)))


def build_gpt_model(hf_cfg, dtype: torch.dtype = torch.float32):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel

    megatron_shim.activate()
    shape = LlamaShape.from_hf_config(hf_cfg)
    return GPTModel(config=transformer_config(hf_cfg, dtype),
                    transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
                    vocab_size=hf_cfg.vocab_size, max_sequence_length=hf_cfg.max_position_embeddings,
                    pre_process=True, post_process=True, share_embeddings_and_output_weights=shape.tied,
                    position_embedding_type="rope", rotary_base=_rope_theta(hf_cfg))


def packed_causal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[1, 1, T, T] boolean mask, True = masked: causal within each sequence, nothing across sequences."""
    seq_id = torch.repeat_interleave(torch.arange(len(cu_seqlens) - 1), cu_seqlens.diff())
    if len(seq_id) != total:
        raise ValueError(f"cu_seqlens covers {len(seq_id)} tokens, the batch has {total}")
    same = seq_id[:, None] == seq_id[None, :]
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    return ~(same & causal)[None, None]


class MegatronPolicy:
    def __init__(self, model, ddp_model, optimizer, hf_cfg, cfg: TrainerConfig):
        self.model, self.ddp, self.optimizer, self.config, self.cfg = model, ddp_model, optimizer, hf_cfg, cfg
        self.shape = LlamaShape.from_hf_config(hf_cfg)

    @classmethod
    def from_hf(cls, hf_path: str | Path, cfg: TrainerConfig, dtype: torch.dtype = torch.float32) -> MegatronPolicy:
        from megatron.core import parallel_state
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from transformers import AutoConfig

        hf_cfg = AutoConfig.from_pretrained(hf_path)
        model = build_gpt_model(hf_cfg, dtype)
        full = hf_to_megatron(_load_hf_weights(Path(hf_path), hf_cfg), LlamaShape.from_hf_config(hf_cfg))
        shard = shard_for_rank(full, _tp_size(), parallel_state.get_tensor_model_parallel_rank())
        missing, unexpected = model.load_state_dict(shard, strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        if missing or unexpected:
            raise ValueError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        ddp = DistributedDataParallel(
            model.config, DistributedDataParallelConfig(use_distributed_optimizer=cfg.use_distributed_optimizer,
                                                        grad_reduce_in_fp32=True), model)
        return cls(model, ddp, _build_optimizer(ddp, cfg, dtype), hf_cfg, cfg)

    # --- compute -------------------------------------------------------------------------------------
    def forward_logprobs(self, tokens: torch.Tensor, position_ids: torch.Tensor,
                         cu_seqlens: torch.Tensor) -> torch.Tensor:
        """out[0, t] = log p(tokens[t+1] | tokens[..t]) inside t's sequence; 0 at each sequence's last token."""
        from megatron.core import tensor_parallel

        total = tokens.shape[1]
        logits = self.ddp(tokens, position_ids, attention_mask=packed_causal_mask(cu_seqlens, total))
        targets = torch.zeros_like(tokens)
        targets[:, :-1] = tokens[:, 1:]
        last = torch.zeros(total, dtype=torch.bool)
        last[cu_seqlens[1:] - 1] = True
        targets[0, last] = 0
        nll = tensor_parallel.vocab_parallel_cross_entropy(logits.float().transpose(0, 1).contiguous(),
                                                           targets.transpose(0, 1).contiguous())
        return (-nll.transpose(0, 1)).masked_fill(last[None], 0.0)

    def optimizer_step(self) -> dict[str, float]:
        self.ddp.finish_grad_sync()
        ok, grad_norm, _ = self.optimizer.step()
        self.optimizer.zero_grad()
        self.ddp.zero_grad_buffer()
        if not ok:
            raise FloatingPointError("optimizer step skipped: non-finite gradients")
        return {"grad_norm": float(grad_norm or 0.0), "lr": self.cfg.lr}

    def reset_optimizer_state(self) -> None:
        for opt in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            opt.optimizer.state.clear()

    # --- weights -------------------------------------------------------------------------------------
    def megatron_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if not k.endswith("_extra_state")}

    def export_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Full HF-named tensors, gathered across tensor-parallel ranks (every rank gets them)."""
        import torch.distributed as dist
        from megatron.core import parallel_state

        local = {k: v.detach().clone() for k, v in self.megatron_state_dict().items()}
        tp = _tp_size()
        if tp > 1:
            group = parallel_state.get_tensor_model_parallel_group()
            shards: list[dict] = [None] * tp  # type: ignore[list-item]
            dist.all_gather_object(shards, local, group=group)
            local = unshard(shards)
        return megatron_to_hf(local, self.shape)


def _load_hf_weights(path: Path, hf_cfg) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors files in {path}")
    return state


def _build_optimizer(ddp, cfg: TrainerConfig, dtype: torch.dtype):
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    ocfg = OptimizerConfig(optimizer="adam", lr=cfg.lr, weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1,
                           adam_beta2=cfg.adam_beta2, clip_grad=cfg.grad_clip, bf16=dtype == torch.bfloat16,
                           params_dtype=dtype, use_distributed_optimizer=cfg.use_distributed_optimizer)
    return get_megatron_optimizer(ocfg, [ddp])
