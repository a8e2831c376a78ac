"""Checkpoints, written atomically (temporary folder, then rename): a Megatron distributed checkpoint of model and
optimizer (resharding-capable, torch_dist format), every rank's RNG states, the counters and an opaque `extra` dict,
and an HF safetensors export that transformers (and the engines) load directly.

    ckpt_root/step_000012/{megatron/, rng/rank_00000.pt, meta.json, hf/}
    ckpt_root/latest      -> "step_000012" (replaced atomically; readers never see a half-written step)

All functions are collective: every trainer rank calls them; rank 0 does the file-system bookkeeping.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from . import megatron_shim
from .optimizer import torch_optimizers
from .parallel import barrier, is_main_rank

LATEST = "latest"


def save_checkpoint(policy, ckpt_root: Path, step: int, version: int, extra: dict[str, Any]) -> Path:
    from megatron.core import dist_checkpointing

    megatron_shim.activate()
    ckpt_root = Path(ckpt_root)
    name = f"step_{step:06d}"
    final, tmp = ckpt_root / name, ckpt_root / f".{name}.tmp"
    if is_main_rank():
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "megatron").mkdir(parents=True)
        (tmp / "rng").mkdir()
        (tmp / "meta.json").write_text(json.dumps({"step": step, "version": version, "extra": extra}))
    barrier()
    dist_checkpointing.save(_sharded_state_dict(policy, is_loading=False), str(tmp / "megatron"))
    torch.save(_rng_state(), tmp / "rng" / f"rank_{_rank():05d}.pt")
    export_hf(policy, tmp / "hf")  # collective gather across TP/PP, ends with a barrier
    if is_main_rank():
        old = ckpt_root / f".{name}.old"
        if final.exists():  # re-saving a step: move the old one aside first so `final` is never half-written
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        _write_atomic(ckpt_root / LATEST, name)
        shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def export_hf(policy, out: Path) -> Path:
    """HF safetensors + config.json of the current weights (collective; rank 0 writes)."""
    hf = policy.export_hf_state_dict()
    if is_main_rank():
        Path(out).mkdir(parents=True, exist_ok=True)
        save_file(hf, str(Path(out) / "model.safetensors"), metadata={"format": "pt"})
        policy.config.save_pretrained(out)
    barrier()
    return Path(out)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = Path(ckpt_root) / LATEST
    if not pointer.exists():
        return None
    path = Path(ckpt_root) / pointer.read_text().strip()
    return path if (path / "meta.json").exists() else None


def load_checkpoint(policy, ckpt_dir: Path) -> dict[str, Any]:
    """Restore model, optimizer and RNG from a step folder, or from a checkpoint root's latest step.
    Returns {"step", "version", "extra"}."""
    from megatron.core import dist_checkpointing

    megatron_shim.activate()
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "meta.json").exists():
        latest = latest_checkpoint(ckpt_dir)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {ckpt_dir} (neither a step folder nor a root with '{LATEST}')")
        ckpt_dir = latest
    state = dist_checkpointing.load(_sharded_state_dict(policy, is_loading=True), str(ckpt_dir / "megatron"))
    missing, unexpected = policy.module.load_state_dict(state["model"], strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {ckpt_dir} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    _restore_zero_step(state["optimizer"])
    with torch.no_grad():  # the dp_reshardable loader copies into the fp32 main params without no_grad
        policy.optimizer.load_state_dict(state["optimizer"])
    _unshare_steps(policy.optimizer)
    rng_file = ckpt_dir / "rng" / f"rank_{_rank():05d}.pt"
    if not rng_file.exists():
        raise FileNotFoundError(
            f"checkpoint {ckpt_dir} has no RNG state for rank {_rank()} (saved with another world size?)"
        )
    _set_rng_state(torch.load(rng_file, weights_only=False))
    meta = json.loads((ckpt_dir / "meta.json").read_text())
    barrier()
    return {"step": meta["step"], "version": meta["version"], "extra": meta.get("extra", {})}


# The distributed optimizer's default format (fully_sharded_model_space) builds ShardedTensors with
# flattened_range, which megatron-core 0.16.1 itself rejects; fully_reshardable gathers each DP group's state on
# its rank 0 and saves it in model space (resumable with another DP size).
_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}


def _sharded_state_dict(policy, is_loading: bool) -> dict:
    _prime_optimizer_state(policy.optimizer)  # the distributed optimizer's state_dict() needs a step, even fresh
    model_sd = policy.module.sharded_state_dict(metadata=_METADATA)
    return {
        "model": model_sd,
        "optimizer": policy.optimizer.sharded_state_dict(model_sd, is_loading=is_loading, metadata=_METADATA),
    }


def _prime_optimizer_state(optimizer) -> None:
    """Give parameters without Adam state (no step taken yet, or just reset) the state Adam would create on its
    first step (step 0, zero moments), so every checkpoint has the same layout and loads into a fresh optimizer."""
    for inner in torch_optimizers(optimizer):
        for group in inner.param_groups:
            for p in group["params"]:
                state = inner.state[p]
                if "exp_avg" not in state:
                    state.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state.setdefault("step", torch.tensor(0.0))


def _unshare_steps(optimizer) -> None:
    """DistributedOptimizer.load_state_dict (torch Adam, no apex/TE) keeps the restored step in its param groups but
    gives every parameter one *shared* step tensor, which the parameter-state loader then overwrites with the
    loading template's value; torch Adam would also advance a shared tensor once per parameter. Give each
    parameter its own step, from its group's restored step when there is one."""
    for inner in torch_optimizers(optimizer):
        for group in inner.param_groups:
            for p in group["params"]:
                state = inner.state.get(p)
                if state and torch.is_tensor(state.get("step")):
                    step = group.get("step")
                    state["step"] = torch.tensor(float(step)) if step is not None else state["step"].clone()


def _restore_zero_step(sd) -> None:
    """FP32Optimizer saves the shared Adam step as `common_step` only `if step:`, so a step of 0 is lost and torch
    Adam then fails on load; put it back (megatron-core 0.16.1)."""
    if not isinstance(sd, dict):
        return
    if "state" in sd and "param_groups" in sd and "param_state" not in sd:
        if "common_step" not in sd["state"]:
            for param_state in sd["state"].values():
                if isinstance(param_state, dict):
                    param_state.setdefault("step", torch.tensor(0.0))
    else:  # a ChainedOptimizer of several: {index: optimizer state dict}
        for value in sd.values():
            _restore_zero_step(value)


def _rng_state() -> dict[str, Any]:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "tracker": get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    get_cuda_rng_tracker().set_states(state["tracker"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
