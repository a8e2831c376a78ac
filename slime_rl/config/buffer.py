from pydantic import Field

from .base import Section


class BufferConfig(Section):
    """The Redis-stream trajectory buffer. Its key names come from the run's id (slime_rl.run_keys), not from
    here: the trajectory stream is `slime:{RUN_ID}:traj`."""

    redis_url: str | None = Field(None, description="external Redis; None starts an embedded redis-server")
    group: str = Field("trainers", min_length=1)
    high_water: int = Field(256, ge=1, description="max unconsumed group entries before producers wait")
    put_timeout_s: float = Field(600.0, gt=0)
    claim_idle_ms: int = Field(30000, ge=0, description="reclaim entries pending this long on another consumer")
    max_entry_bytes: int = Field(64 * 1024 * 1024, ge=1024)
