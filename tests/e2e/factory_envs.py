"""An environment factory that leaves a mark when it is built and when it is closed, for the end-to-end check that a
run closes every worker's factory (imported by the run's processes through PYTHONPATH)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from slime_rl.env_api import EnvFactory
from slime_rl_examples.math_env import ArithmeticEnv


class MarkedArithmeticFactory(EnvFactory):
    env_class = ArithmeticEnv

    def __init__(self, marker_dir: str, format_bonus: float = 0.0):
        self.format_bonus = format_bonus
        self.marks = Path(marker_dir)
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (self.marks / f"built-{self.id}").touch()

    def new_episode(self) -> ArithmeticEnv:
        return ArithmeticEnv(self.format_bonus)

    async def close(self) -> None:
        (self.marks / f"closed-{self.id}").touch()
