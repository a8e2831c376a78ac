from pathlib import Path

from pydantic import Field

from .base import Section

DEFAULT_MODEL_DIR = Path(".cache/models/SmolLM2-135M-Instruct")


class ModelConfig(Section):
    """The policy model: a Hugging Face Llama-family safetensors folder."""

    path: Path = Field(DEFAULT_MODEL_DIR, description="HF safetensors folder (made by `slime-rl model convert`)")
    dtype: str = Field("float32", pattern="^(float32|bfloat16|float16)$")
