"""Checkpoints written atomically (temporary folder, then rename): Megatron model + optimizer + RNG + counters,
and an HF safetensors export that transformers (and the engines) load directly.

    run_dir/checkpoints/step_000012/{megatron.pt, meta.json, hf/}
    run_dir/checkpoints/latest        -> "step_000012" (replaced atomically)
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
from safetensors.torch import save_file


def save_checkpoint(policy, ckpt_root: Path, step: int, version: int, extra: dict[str, Any]) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    final, tmp = ckpt_root / name, ckpt_root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "hf").mkdir(parents=True)
    torch.save({"model": policy.megatron_state_dict(), "optimizer": policy.optimizer.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}},
               tmp / "megatron.pt")
    export_hf(policy, tmp / "hf")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "version": version, "extra": extra}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    _write_atomic(ckpt_root / "latest", name)
    return final


def export_hf(policy, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file(policy.export_hf_state_dict(), str(out / "model.safetensors"), metadata={"format": "pt"})
    policy.config.save_pretrained(out)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / "latest"
    if not pointer.exists():
        return None
    path = ckpt_root / pointer.read_text().strip()
    return path if (path / "meta.json").exists() else None


def load_checkpoint(policy, ckpt_dir: Path) -> dict[str, Any]:
    state = torch.load(ckpt_dir / "megatron.pt", map_location="cpu", weights_only=False)
    missing, unexpected = policy.model.load_state_dict(state["model"], strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ValueError(f"checkpoint {ckpt_dir} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    policy.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return json.loads((ckpt_dir / "meta.json").read_text())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
