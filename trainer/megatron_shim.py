"""CPU compatibility shim for megatron-core 0.16.1 on a CPU-only torch build.

`activate()` does nothing and returns False when `torch.cuda.is_available()`: on a GPU machine megatron runs
untouched. Without CUDA it installs the patches below and returns True (later calls only extend the module sweep
to megatron modules imported since). Everything is scoped to megatron's own modules: no torch function that works
on a CPU build changes behaviour for other code in the process, and nothing is thread-local (Ray may call actor
methods from other threads).

Patched spots (why):
- The `torch` global of every loaded `megatron.core.*` module is replaced by a proxy module. Its tensor factories
  (`tensor`, `zeros`, `empty`, `ones`, `full`, `arange`, `*_like`) rewrite `device="cuda"` / a CUDA ordinal to
  CPU, and its `torch.cuda` answers `current_device()` with the CPU device and makes `synchronize()` a no-op.
  This one patch covers the hard-coded CUDA spots on the CPU path:
  global memory buffer (`utils.GlobalMemoryBuffer`, `torch.cuda.current_device`), RoPE `inv_freq` moved to
  `torch.cuda.current_device()` (`rotary_pos_embedding`), the default causal mask built with `device="cuda"`
  (`transformer/utils.get_default_causal_mask`), `_ParamAndGradBuffer` allocation and its warm-up tensor
  (`distributed/param_and_grad_buffer`), optimizer `found_inf` / scale / grad-norm buffers (`optimizer/optimizer`,
  `clip_grads`, `grad_scaler`, `distrib_optimizer`), `total_num_tokens` in `pipeline_parallel/schedules`,
  p2p shape exchange buffers, TP gather/scatter buffers (`tensor_parallel/layers`, `mappings`), and the
  `torch.cuda.synchronize()` calls around distributed checkpointing (`dist_checkpointing/strategies/*`).
- The model-parallel RNG tracker (`tensor_parallel/random`): `_get_cuda_rng_state` / `_set_cuda_rng_state` and the
  proxy's `torch.cuda.get_rng_state/set_rng_state/manual_seed` use the CPU generator (the CUDA versions are
  queued lazily and never run on a CPU build, so tracker forks would silently do nothing).
- `Tensor.type()` called with no arguments *from a megatron.core module* reports a CPU tensor under its CUDA name
  (`torch.FloatTensor` -> `torch.cuda.FloatTensor`): the optimizers (`Float16OptimizerWithFloat16Params`,
  `DistributedOptimizer`) and `clip_grads` accept only CUDA type names. Calls from any other module are unchanged.
- `Tensor.cuda()` returns the tensor itself (dist-checkpoint exchange, grad scaler and distributed-optimizer
  reload paths call it); on a CPU-only build it can only raise, so nothing that worked changes.

Not covered (GPU-only): sequence parallel (needs TransformerEngine norms), fused kernels (apex/TE), CUDA graphs.
"""

from __future__ import annotations

import importlib
import sys
import types

import torch

_active = False
_REAL_TYPE = torch.Tensor.type
_FACTORIES = (
    "tensor",
    "as_tensor",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
    "rand",
    "randn",
    "randint",
    "empty_strided",
)
# megatron modules whose import must precede the sweep (everything the trainer touches)
_MODULES = (
    "megatron.core.utils",
    "megatron.core.parallel_state",
    "megatron.core.tensor_parallel",
    "megatron.core.models.gpt.gpt_model",
    "megatron.core.models.gpt.gpt_layer_specs",
    "megatron.core.distributed",
    "megatron.core.optimizer",
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.pipeline_parallel.p2p_communication",
    "megatron.core.dist_checkpointing",
    "megatron.core.dist_checkpointing.serialization",
    "megatron.core.dist_checkpointing.strategies.torch",
    "megatron.core.dist_checkpointing.strategies.fully_parallel",
)


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)  # a bare ordinal is a CUDA device


def _cpu_factory(fn):
    def wrapper(*args, **kwargs):
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        kwargs.pop("pin_memory", None)  # pinning needs a CUDA host allocator
        return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    return wrapper


class _CpuCuda(types.ModuleType):
    """torch.cuda as megatron sees it on a CPU machine."""

    def __init__(self):
        super().__init__("torch.cuda")
        self.current_device = lambda: torch.device("cpu")
        self.synchronize = lambda *args, **kwargs: None
        self.get_rng_state = lambda device="cuda": torch.get_rng_state()
        self.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
        self.manual_seed = torch.manual_seed
        self.random = types.SimpleNamespace(get_rng_state=self.get_rng_state, set_rng_state=self.set_rng_state)

    def __getattr__(self, name):
        return getattr(torch.cuda, name)


class _CpuTorch(types.ModuleType):
    """The torch module as megatron sees it on a CPU machine: CUDA tensor creation lands on CPU."""

    def __init__(self):
        super().__init__("torch")
        self.cuda = _CpuCuda()
        for name in _FACTORIES:
            setattr(self, name, _cpu_factory(getattr(torch, name)))

    def __getattr__(self, name):
        return getattr(torch, name)


def _type(self, dtype=None, non_blocking=False, **kwargs):
    if dtype is None and not kwargs and not self.is_cuda:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("megatron.core."):
            return _REAL_TYPE(self).replace("torch.", "torch.cuda.", 1)
    return _REAL_TYPE(self, dtype, non_blocking, **kwargs) if dtype is not None else _REAL_TYPE(self, **kwargs)


def _cuda_noop(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
    return self


_PROXY: _CpuTorch | None = None


def _sweep() -> None:
    global _PROXY
    _PROXY = _PROXY or _CpuTorch()
    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.core") and getattr(module, "torch", None) is torch:
            module.torch = _PROXY


def activate() -> bool:
    """Install the patches when CUDA is absent (again for megatron modules loaded since); returns whether the
    shim is active. Call it before building models, optimizers or checkpoints (init_parallel does)."""
    global _active
    if torch.cuda.is_available():
        return False
    if _active:
        _sweep()  # megatron modules imported since the last call
        return True
    for name in _MODULES:
        importlib.import_module(name)
    _sweep()

    from megatron.core.tensor_parallel import random as mp_random

    mp_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)
    torch.Tensor.type = _type
    torch.Tensor.cuda = _cuda_noop
    _active = True
    return True


def is_active() -> bool:
    return _active
