from pydantic import Field

from .base import Section


class SamplingConfig(Section):
    max_new_tokens: int = Field(64, ge=1, le=131072)
    temperature: float = Field(1.0, ge=0.0, le=10.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)
    ignore_eos: bool = Field(False, description="generate max_new_tokens regardless of EOS (benchmark workloads)")


class RolloutConfig(Section):
    """Rollout workers: how many, group size, over-provisioning and partial rollouts."""

    num_workers: int = Field(1, ge=1, le=1024)
    group_size: int = Field(4, ge=1, le=1024, description="samples per prompt (n)")
    groups_per_step: int = Field(4, ge=1, description="groups the trainer consumes per optimizer step")
    concurrency: int = Field(16, ge=1, description="requests in flight per worker")
    staleness_tau: int = Field(
        2,
        ge=0,
        description="max policy versions a trajectory may lag the trainer: bounds "
        "how far rollouts run ahead, which partials are resumed, and what the trainer keeps "
        "(slime_rl/staleness.py)",
    )
    over_provision: float = Field(1.0, ge=1.0, le=4.0, description="groups started / groups needed per step")
    partial_rollouts: bool = Field(True, description="resume the aborted long tail later (False: discard it)")
    shuffle: bool = Field(True, description="reshuffle the prompts every epoch")
    seed: int = 0
    repack_below: int = Field(
        0,
        ge=0,
        description="dynamic repacking: when at most this many requests are left in "
        "flight over several engines, move them onto one engine (0: off)",
    )
    health_interval_s: float = Field(2.0, gt=0, description="how often the router checks engine /health")
    trajectory_log_every: int = Field(1, ge=1, description="log one sample trajectory every N pushed groups")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
