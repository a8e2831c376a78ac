from typing import Literal

from pydantic import Field

from .base import Section


class EngineConfig(Section):
    """Rollout engines: built-in CPU engines started by the run, or external SGLang-API servers."""

    kind: Literal["cpu", "sglang", "external"] = "cpu"
    num_engines: int = Field(1, ge=1, le=64)
    urls: list[str] = Field(default_factory=list, description="external engine base URLs (kind=external)")
    max_batch_size: int = Field(32, ge=1, le=4096)
    threads: int = Field(1, ge=1, le=256, description="torch threads per CPU engine")
    request_timeout_s: float = Field(600.0, gt=0)
