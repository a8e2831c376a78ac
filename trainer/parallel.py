"""torch.distributed (gloo on CPU, nccl on GPU) + megatron parallel state (TP/PP/DP), for one process or several.

Single process: `init_parallel()` (or `init_parallel(1, 1, 1)`) is the whole setup; it picks a free loopback port.
Several processes (torch.multiprocessing, Ray actors, torchrun): every rank calls
`init_parallel(tp, pp, dp, rank=r, world_size=tp*pp*dp, master_addr=addr, master_port=port)` with the same
addr/port (rank 0's host and a port free there, chosen once by whoever launches the ranks). Under torchrun the
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT environment variables are used when the arguments are omitted.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from . import megatron_shim


def init_parallel(
    tp: int = 1,
    pp: int = 1,
    dp: int | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    seed: int = 1234,
    timeout_s: float = 600.0,
) -> None:
    """Initialise the process group and megatron's TP/PP/DP groups. DP defaults to world_size / (tp * pp).
    Idempotent: a second call with the same layout is a no-op (the seed is re-applied)."""
    megatron_shim.activate()
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    if world_size is None:
        world_size = int(os.environ["WORLD_SIZE"]) if "WORLD_SIZE" in os.environ else tp * pp * (dp or 1)
    dp = world_size // (tp * pp) if dp is None else dp
    if tp < 1 or pp < 1 or dp < 1 or tp * pp * dp != world_size:
        raise ValueError(
            f"trainer.parallel: tensor={tp} * pipeline={pp} * data={dp} must equal the world size {world_size}"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"trainer.parallel: rank {rank} is outside world size {world_size}")
    if not dist.is_initialized():
        if master_port is None and world_size > 1 and "MASTER_PORT" not in os.environ:
            raise ValueError(
                "trainer.parallel: several ranks need one shared master_port (pick it once, pass it to every rank)"
            )
        if master_port is None and "MASTER_PORT" not in os.environ:
            from slime_rl.net import free_port

            master_port = free_port()
        os.environ["MASTER_ADDR"] = master_addr or os.environ.get("MASTER_ADDR", "127.0.0.1")
        if master_port is not None:
            os.environ["MASTER_PORT"] = str(master_port)
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(
            "nccl" if cuda else "gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s)
        )
    elif dist.get_world_size() != world_size:
        raise ValueError(
            f"trainer.parallel: torch.distributed already runs with world size "
            f"{dist.get_world_size()}, asked for {world_size}"
        )
    if parallel_state.model_parallel_is_initialized():
        have = (
            parallel_state.get_tensor_model_parallel_world_size(),
            parallel_state.get_pipeline_model_parallel_world_size(),
        )
        if have != (tp, pp):
            raise ValueError(f"trainer.parallel: already initialised with (tensor, pipeline)={have}, asked {(tp, pp)}")
    else:
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    model_parallel_cuda_manual_seed(seed)


def destroy_parallel() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main_rank() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
