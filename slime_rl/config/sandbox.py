from typing import Literal

from pydantic import Field

from .base import Section


class SandboxConfig(Section):
    """Where generated code runs and with which limits."""

    backend: Literal["bwrap", "docker", "remote"] = "bwrap"
    remote_url: str | None = Field(None, description="a slime-rl sandbox service or a SandboxFusion deployment")
    docker_url: str | None = Field(None, description="docker engine socket; None = DOCKER_HOST / the default")
    cpu_seconds: int = Field(5, ge=1)
    memory_mb: int = Field(512, ge=16)
    max_processes: int = Field(64, ge=1)
    max_file_mb: int = Field(16, ge=1)
    wall_timeout_s: float = Field(10.0, gt=0)
    output_cap_bytes: int = Field(64 * 1024, ge=256)
    concurrency: int = Field(2, ge=1, description="runs at once in the sandbox service")
    warm_pool: int = Field(2, ge=0, description="bwrap: sandboxes started ahead of need (hides their start-up)")
    uid_base: int = Field(
        200_000,
        ge=1000,
        description="bwrap: each run gets its own uid from this range, so process limits are per run, not shared",
    )
    uid_count: int = Field(4096, ge=1)
