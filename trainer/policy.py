"""The policy as a Megatron-core GPTModel: built from a Hugging Face Llama config, loaded from its safetensors,
wrapped in Megatron DDP with a Megatron optimizer (optionally the distributed optimizer), exported back to HF
names for the relay, and checkpointed with Megatron distributed checkpoints.

Call trainer.parallel.init_parallel(...) first, in every rank."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from slime_rl.config import TrainerConfig

from .convert import LlamaShape, hf_to_megatron, megatron_to_hf, merge_stages, select_stage, shard_for_rank, unshard
from .megatron_model import build_gpt_model, packed_causal_mask, rope_positions
from .optimizer import build_optimizer, torch_optimizers

__all__ = ["MegatronPolicy", "packed_causal_mask"]


def _ps():
    from megatron.core import parallel_state

    return parallel_state


class MegatronPolicy:
    """`model` is the Megatron-DDP-wrapped GPTModel, `module` the bare GPTModel, `config` the HF config."""

    def __init__(self, module, ddp_model, optimizer, hf_cfg, cfg: TrainerConfig):
        self.module, self.model, self.optimizer, self.config, self.cfg = module, ddp_model, optimizer, hf_cfg, cfg
        self.shape = LlamaShape.from_hf_config(hf_cfg)

    @classmethod
    def from_hf(
        cls, hf_path: str | Path, trainer_cfg: TrainerConfig, dtype: torch.dtype = torch.float32
    ) -> MegatronPolicy:
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from transformers import AutoConfig

        ps = _ps()
        if not ps.model_parallel_is_initialized():
            raise RuntimeError("MegatronPolicy.from_hf: call trainer.parallel.init_parallel(...) first")
        hf_cfg = AutoConfig.from_pretrained(hf_path)
        module = build_gpt_model(hf_cfg, dtype)
        shape = LlamaShape.from_hf_config(hf_cfg)
        full = hf_to_megatron(load_hf_weights(Path(hf_path)), shape)
        stage = select_stage(
            full, shape, ps.get_pipeline_model_parallel_world_size(), ps.get_pipeline_model_parallel_rank()
        )
        shard = shard_for_rank(stage, ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank())
        _load_strict(module, {k: v.to(dtype) for k, v in shard.items()}, f"weights in {hf_path}")
        ddp = DistributedDataParallel(
            module.config,
            DistributedDataParallelConfig(
                use_distributed_optimizer=trainer_cfg.use_distributed_optimizer, grad_reduce_in_fp32=True
            ),
            module,
        )
        return cls(module, ddp, build_optimizer(ddp, trainer_cfg, dtype), hf_cfg, trainer_cfg)

    # --- compute -------------------------------------------------------------------------------------
    def forward_logprobs(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        prefix_of: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Packed micro-batch [1, T] of n segments (cu_seqlens [n+1], position_ids each token's position in its
        sequence; prefix_of: the earlier segment each one continues, see packing) -> [1, T] with
        out[0, t] = log p(tokens[t+1] | what t attends to), 0 at each segment's last token. Differentiable;
        vocab-parallel under tensor parallelism. Pipeline parallel: use forward_backward."""
        if _ps().get_pipeline_model_parallel_world_size() > 1:
            raise RuntimeError(
                "forward_logprobs: with pipeline parallel > 1 the logits exist only on the last "
                "stage; use MegatronPolicy.forward_backward"
            )
        out, tokens, cu_seqlens = self._forward(self.model, tokens, position_ids, cu_seqlens, prefix_of)
        return _logprobs(out, tokens, cu_seqlens)

    def _forward(self, model, tokens, position_ids, cu_seqlens, prefix_of=None):
        """(model output, tokens, cu_seqlens) on the model's device; the output is logits on the last stage."""
        _check_packed(tokens, position_ids)
        tokens, position_ids, cu_seqlens = self._on_device(tokens, position_ids, cu_seqlens)
        mask = packed_causal_mask(cu_seqlens, tokens.shape[1], prefix_of)
        return model(tokens, rope_positions(position_ids), attention_mask=mask), tokens, cu_seqlens

    def _on_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        device = (
            self.module.embedding.word_embeddings.weight.device
            if self.module.pre_process
            else (self.module.decoder.final_layernorm.weight.device)
        )
        return tuple(t.to(device) for t in tensors)

    def forward_backward(
        self,
        batches: Sequence[tuple[torch.Tensor | None, ...]],
        loss_fn: Callable[[torch.Tensor, int], tuple[torch.Tensor, dict]],
        forward_only: bool = False,
    ) -> list[dict]:
        """Run megatron's schedule (pipelined when pipeline parallel > 1) over packed micro-batches
        (tokens, position_ids, cu_seqlens[, prefix_of]). `loss_fn(logprobs [1, T], k)` for micro-batch k returns
        (loss, metrics) and runs on the last pipeline stage only; the gradient is that of the sum of the losses.
        Returns the metrics per micro-batch on the last stage, [] on the others. Call optimizer_step() afterwards."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        n = len(batches)
        for tokens, position_ids, *_ in batches:
            _check_packed(tokens, position_ids)

        def step(data_iterator, model):
            k, batch = next(data_iterator)
            out, tokens, cu_seqlens = self._forward(model, *batch)

            def loss_func(logits):
                loss, metrics = loss_fn(_logprobs(logits, tokens, cu_seqlens), k)
                return loss * n, metrics  # the schedule divides each micro-batch loss by n

            return out, loss_func

        return get_forward_backward_func()(
            forward_step_func=step,
            data_iterator=iter(enumerate(batches)),
            model=[self.model],
            num_microbatches=n,
            seq_length=max(b[0].shape[1] for b in batches),
            micro_batch_size=1,
            forward_only=forward_only,
        )

    def optimizer_step(self) -> dict[str, float]:
        """Finish the grad reduction (DP all-reduce / reduce-scatter, tied embeddings across pipeline stages),
        clip (trainer.grad_clip), step, zero the grads."""
        from megatron.core.distributed import finalize_model_grads

        finalize_model_grads([self.model])
        ok, grad_norm, _ = self.optimizer.step()
        self.optimizer.zero_grad()
        self.model.zero_grad_buffer()
        norm = float(grad_norm) if grad_norm is not None else math.nan
        return {"grad_norm": norm, "lr": float(self.optimizer.param_groups[0]["lr"]), "update_skipped": float(not ok)}

    def reset_optimizer_state(self) -> None:
        """Forget Adam moments and step counts (weights are kept)."""
        for inner in torch_optimizers(self.optimizer):
            inner.state.clear()

    # --- weights -------------------------------------------------------------------------------------
    def megatron_state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's shard (its stage, its TP slice), Megatron names."""
        return {k: v for k, v in self.module.state_dict().items() if not k.endswith("_extra_state")}

    def full_megatron_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model in Megatron names, gathered over tensor- and pipeline-parallel ranks (collective)."""
        ps = _ps()
        local = {k: v.detach().cpu().clone() for k, v in self.megatron_state_dict().items()}
        tp, pp = ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()
        if tp > 1:
            local = unshard(_gather_objects(local, tp, ps.get_tensor_model_parallel_group()))
        if pp > 1:
            local = merge_stages(_gather_objects(local, pp, ps.get_pipeline_model_parallel_group()), self.shape)
        return local

    def export_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Full HF-named tensors on every rank (collective across TP/PP ranks: call it on all of them)."""
        return megatron_to_hf(self.full_megatron_state_dict(), self.shape)

    def save_checkpoint(self, ckpt_dir: Path, step: int, version: int, extra: dict[str, Any]) -> Path:
        """Atomic Megatron distributed checkpoint + HF export under ckpt_dir/step_NNNNNN (collective)."""
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, Path(ckpt_dir), step, version, extra)

    def load_checkpoint(self, ckpt_dir: Path) -> dict[str, Any]:
        """Restore model, optimizer and RNG from a step folder or a checkpoint root (its latest);
        returns {"step", "version", "extra"} (collective)."""
        from .checkpoint import load_checkpoint

        return load_checkpoint(self, Path(ckpt_dir))


def load_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors files in {path}")
    return state


def _check_packed(tokens: torch.Tensor, position_ids: torch.Tensor) -> None:
    if tokens.dim() != 2 or tokens.shape[0] != 1 or position_ids.shape != tokens.shape:
        raise ValueError(
            f"packed micro-batch: tokens and position_ids must both be [1, T], got "
            f"{tuple(tokens.shape)} and {tuple(position_ids.shape)}"
        )


def _logprobs(logits: torch.Tensor, tokens: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[1, T, V / tp] logits -> [1, T] next-token logprobs inside each sequence, 0 at sequence ends."""
    from megatron.core import tensor_parallel

    last = torch.zeros(tokens.shape[1], dtype=torch.bool, device=tokens.device)
    last[cu_seqlens[1:] - 1] = True
    targets = torch.roll(tokens, -1, dims=1).masked_fill(last[None], 0)
    nll = tensor_parallel.vocab_parallel_cross_entropy(
        logits.float().transpose(0, 1).contiguous(), targets.transpose(0, 1).contiguous()
    )
    return (-nll.transpose(0, 1)).masked_fill(last[None], 0.0)


def _load_strict(module, state: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ValueError(f"{what} do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _gather_objects(obj, n: int, group) -> list:
    out: list = [None] * n
    dist.all_gather_object(out, obj, group=group)
    return out
