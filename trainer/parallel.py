"""torch.distributed (gloo on CPU, nccl on GPU) + megatron parallel state, for one process or several."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from . import megatron_shim


def init_parallel(tp: int = 1, pp: int = 1, rank: int = 0, world_size: int = 1, master_port: int | None = None,
                  seed: int = 1234) -> None:
    """Initialise the process group and megatron's TP/PP/DP groups (DP = world_size / (tp * pp))."""
    megatron_shim.activate()
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    if not dist.is_initialized():
        if master_port is None:
            from slime_rl.net import free_port

            master_port = free_port()
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(master_port)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        if torch.cuda.is_available():
            torch.cuda.set_device(rank % torch.cuda.device_count())
    if world_size % (tp * pp):
        raise ValueError(f"trainer.parallel: world size {world_size} is not divisible by tensor*pipeline={tp * pp}")
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    model_parallel_cuda_manual_seed(seed)


def destroy_parallel() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
