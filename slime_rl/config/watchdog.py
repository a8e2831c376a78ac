from pydantic import Field

from .base import Section


class WatchdogConfig(Section):
    """Stops a run that cannot make progress, with a message that names the cause, instead of letting it wait."""

    max_untrainable_batches: int = Field(
        3,
        ge=1,
        description="stop after this many consecutive batches that hold no trainable group (groups whose "
        "samples failed or were aborted; groups dropped on purpose, e.g. for staleness, do not count)",
    )
    max_silence_s: float = Field(
        300.0,
        gt=0,
        description="stop when no trajectory reaches the trainer for this long (rollouts paused from "
        "the dashboard do not count)",
    )
    call_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="deadline for one call to a component: a train step, a checkpoint, an evaluation, "
        "a weight push reaching the engines, a rollout batch in sync mode",
    )
