"""CPU compatibility shim for megatron-core 0.16 on a CPU-only torch build.

Active only when CUDA is absent (`activate()` returns False and changes nothing when torch.cuda.is_available()).
Each patch replaces a CUDA-only spot with its CPU equivalent:
- `torch.cuda.current_device()` -> the CPU device: used by the global memory buffer, RoPE `get_emb` (moves
  `inv_freq` to it), `_ParamAndGradBuffer` allocation and `schedules.py` tensor creation.
- `torch.cuda.synchronize()` -> no-op: called around distributed checkpointing and timers.
- `megatron.core.fusions.fused_softmax.get_default_causal_mask` -> builds the mask on CPU (upstream hard-codes
  device="cuda").
- CUDA RNG state (`torch.cuda.get_rng_state/set_rng_state/manual_seed` and megatron's `_get/_set_cuda_rng_state`)
  -> the CPU generator, so the model-parallel RNG tracker forks and restores the CPU RNG instead.
- `torch.cuda.FloatTensor` / `HalfTensor` / `BFloat16Tensor` type names -> their CPU equivalents, and
  `Tensor.type()` reports CPU tensors under the CUDA name, so the optimizer's type checks accept CPU parameters.
- every remaining `device="cuda"` tensor creation (optimizer scale/found-inf buffers, grad-clip norms, the
  param/grad buffer warm-up) and `Tensor.cuda()` -> CPU, through a TorchFunctionMode that rewrites only the
  device argument (megatron hard-codes these in too many places to patch one by one).
Sequence parallel needs TransformerEngine norms and stays GPU-only.
"""
from __future__ import annotations

import functools

import torch
from torch.overrides import TorchFunctionMode

_active = False


def activate() -> bool:
    """Install the patches once; returns whether the shim is active."""
    global _active
    if torch.cuda.is_available():
        return False
    if _active:
        return True
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.synchronize = lambda *args, **kwargs: None
    for name, cpu_type in (("FloatTensor", torch.FloatTensor), ("HalfTensor", torch.HalfTensor),
                           ("BFloat16Tensor", torch.BFloat16Tensor)):
        setattr(torch.cuda, name, cpu_type)

    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
    torch.cuda.manual_seed = torch.manual_seed

    from megatron.core.fusions import fused_softmax
    from megatron.core.tensor_parallel import random as mp_random

    mp_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)

    @functools.lru_cache(maxsize=32)
    def causal_mask_cpu(sq: int) -> torch.Tensor:
        return torch.ones(sq, sq, dtype=torch.bool).triu(1)

    fused_softmax.get_default_causal_mask = causal_mask_cpu
    _CudaToCpu().__enter__()  # stays on for the life of the (trainer) process
    _active = True
    return True


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int)  # a bare ordinal means a CUDA device


class _CudaToCpu(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # grad-clip asserts `grad.type() == "torch.cuda.FloatTensor"`; report CPU tensors under the CUDA name
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
        if _is_cuda(kwargs.get("device")):
            kwargs = {**kwargs, "device": "cpu"}
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def is_active() -> bool:
    return _active
