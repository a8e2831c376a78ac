from typing import Literal

from pydantic import Field

from .base import Section


class RelayConfig(Section):
    """Weight relay: how often the trainer publishes, how relays fan out."""

    push_every: int = Field(1, ge=1, description="publish weights every K trainer steps")
    num_relays: int = Field(1, ge=1)
    fanout: int = Field(2, ge=1, description="children per relay in the fan-out tree")
    keep_versions: int = Field(2, ge=1)
    transport: Literal["auto", "http"] = Field(
        "auto",
        description="auto: engines on the syncer's machine load each version from a file in /dev/shm "
        "(/update_weights_from_disk), others get it over HTTP; http: always one body to /update_weights_from_tensor",
    )
