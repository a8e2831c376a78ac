from pathlib import Path

from pydantic import Field, field_validator

from ..model_store import DEFAULT_NAME, resolve
from .base import Section

_CPU_BF16_FLAGS = {"amx_bf16", "avx512_bf16"}  # CPUs that multiply bf16 matrices natively (oneDNN uses them)


class ModelConfig(Section):
    """The policy model: a Hugging Face Llama-family safetensors folder."""

    path: Path = Field(
        Path(DEFAULT_NAME),
        validate_default=True,
        description="HF safetensors folder, or the name of a model the model store makes "
        "(SmolLM2-135M-Instruct: its folder in ~/.cache/slime-rl/models, the same from any "
        "working directory; made by `slime-rl model convert`, or at the run's start)",
    )
    dtype: str = Field(
        "float32",
        pattern="^(auto|float32|bfloat16|float16)$",
        description="trainer and CPU-engine precision; bfloat16 trains mixed-precision (Megatron keeps "
        "float32 main weights in the optimizer), the engine holds bfloat16 weights; auto: "
        "bfloat16 where this machine's GPU or CPU computes it natively, else float32",
    )

    @field_validator("path")
    @classmethod
    def _resolve_name(cls, v: Path) -> Path:
        return resolve(v)

    @field_validator("dtype")
    @classmethod
    def _resolve_auto(cls, v: str) -> str:
        """`auto` is settled once, where the config is loaded, so every component runs the same precision."""
        return ("bfloat16" if native_bf16() else "float32") if v == "auto" else v


def native_bf16() -> bool:
    """A CUDA GPU with bf16, or a CPU with AMX / AVX512-BF16. Without them bf16 is emulated, slower than float32."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: no cheap way to tell, stay with float32
        return False
    return bool(flags & _CPU_BF16_FLAGS)
