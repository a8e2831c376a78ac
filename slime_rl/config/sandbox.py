from typing import Literal

from pydantic import Field

from .base import Section


class SandboxConfig(Section):
    """Where generated code runs and with which limits."""

    backend: Literal["bwrap", "docker", "remote"] = "bwrap"
    remote_url: str | None = None
    cpu_seconds: int = Field(5, ge=1)
    memory_mb: int = Field(512, ge=16)
    max_processes: int = Field(64, ge=1)
    max_file_mb: int = Field(16, ge=1)
    wall_timeout_s: float = Field(10.0, gt=0)
    output_cap_bytes: int = Field(64 * 1024, ge=256)
    concurrency: int = Field(2, ge=1)
