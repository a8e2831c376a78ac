from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class ParallelConfig(Section):
    tensor: int = Field(1, ge=1)
    pipeline: int = Field(1, ge=1)
    data: int = Field(1, ge=1)


class TrainerConfig(Section):
    """Megatron-core trainer: optimisation, packing, checkpoints."""

    backend: Literal["megatron"] = "megatron"
    lr: float = Field(1e-6, gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    max_steps: int = Field(20, ge=1)
    micro_batch_tokens: int = Field(
        1024,
        ge=16,
        description="token budget of one packed micro-batch (attention is materialised: memory grows with its square)",
    )
    share_prompt_prefix: bool = Field(
        True,
        description="pack a group's members as branches of one shared prompt "
        "(same logprobs, fewer tokens when prompts are long against responses)",
    )
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    use_distributed_optimizer: bool = False
    reset_optimizer_on_push: bool = False
    checkpoint_every: int = Field(0, ge=0, description="0 disables periodic checkpoints")
    seed: int = 1234
    threads: int = Field(0, ge=0, le=256, description="torch threads for the trainer (0: all cores)")

    @model_validator(mode="after")
    def _parallel_fits(self):
        if self.parallel.tensor * self.parallel.pipeline * self.parallel.data > 512:
            raise ValueError("parallel: tensor * pipeline * data exceeds 512 ranks")
        return self
