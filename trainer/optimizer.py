"""The trainer's optimizer: Megatron's (distributed) Adam, stepping with torch's fused kernel where it can."""

from __future__ import annotations

import torch

from slime_rl.config import TrainerConfig


def build_optimizer(ddp, cfg: TrainerConfig, dtype: torch.dtype):
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    ocfg = OptimizerConfig(
        optimizer="adam",
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        clip_grad=cfg.grad_clip,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        params_dtype=dtype,
        use_distributed_optimizer=cfg.use_distributed_optimizer,
    )
    return use_fused_adam(get_megatron_optimizer(ocfg, [ddp]))


def torch_optimizers(optimizer) -> list[torch.optim.Optimizer]:
    """The torch optimizers inside a Megatron optimizer (a ChainedOptimizer holds one per parameter group set)."""
    return [opt.optimizer for opt in getattr(optimizer, "chained_optimizers", [optimizer])]


def use_fused_adam(optimizer):
    """Without Transformer Engine or apex, Megatron steps with torch's Adam(W) in its multi-tensor (foreach) form.
    Torch's fused kernel makes the same update in one pass over each tensor: on one CPU core it steps the 135M
    model in 0.12 s instead of 1.4 s (measured), time the trainer otherwise spends every step."""
    for inner in torch_optimizers(optimizer):
        params = [p for group in inner.param_groups for p in group["params"]]
        if isinstance(inner, torch.optim.Adam | torch.optim.AdamW) and all(
            p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params
        ):
            for group in [inner.defaults, *inner.param_groups]:
                group.update(fused=True, foreach=False)
    return optimizer
