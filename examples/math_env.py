"""Arithmetic questions with a verifiable answer: the demo task.

Measured starting rewards of SmolLM2-135M-Instruct (temperature 1, 16 new tokens, 192-256 samples each, same
system prompt): two-digit addition 0.00-0.03; "Answer: N" format + correctness 0.01; counting letters 0.06;
successor of a number 0.04; larger of two 2-digit numbers 0.22; smaller of two digits 0.27; single-digit addition
scored on the last number 0.18-0.24; the same with proximity credit 0.47. The model mostly rambles and is cut off
at the token limit (mean length ~14.5 of 16); bare-number replies are rare (~1%) and, at the start, wrong.
Single-digit addition scored on the last number of the reply (so "3 + 4 = 7" counts) sits in the learnable middle:
GRPO's first win is answering at once, where the model is most accurate. `format_bonus` (default 0) optionally
adds credit for a bare-number reply (a constructor argument: `env.kwargs`); `num_samples`, `max_operand` and `ops`
shape generated rows (`env.dataset_kwargs`).

Data are generated, never downloaded: `python -m slime_rl_examples.math_env --out examples/math` writes the
shipped train/eval JSONL (disjoint seeds; with single digits there are only 100 distinct questions, so "held out"
means unseen draws, not unseen problems); `load_dataset(None)` generates the same rows on the fly.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

from slime_rl.env_api import Messages, SingleTurnEnv, read_jsonl

_NUMBER = re.compile(r"-?\d+")
_BARE_NUMBER = re.compile(r"^\s*-?\d+\s*\.?\s*$")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
DATA_DIR = Path(__file__).parent / "math"
SEEDS = {"train": 1, "eval": 2}


def make_problems(n: int, seed: int, max_operand: int = 9, ops: str = "+") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice(ops)
        out.append({"id": f"{seed}-{i}", "question": f"What is {a} {op} {b}?", "answer": str(_OPS[op](a, b))})
    return out


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


class ArithmeticEnv(SingleTurnEnv):
    name = "arithmetic"
    instruction = "Answer with only the number."
    system = "You are a concise math assistant."  # shorter than the template's default: fewer tokens per sample

    def __init__(self, format_bonus: float = 0.0):
        super().__init__()
        if not 0.0 <= format_bonus < 1.0:
            raise ValueError(f"format_bonus must be in [0, 1), got {format_bonus}")
        self.format_bonus = format_bonus

    def prompt(self, sample: dict[str, Any]) -> Messages:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": f"{sample['question']} {self.instruction}"},
        ]

    def reward(self, sample: dict[str, Any], response_text: str) -> float:
        correct = last_number(response_text) == str(sample["answer"])
        bare = bool(_BARE_NUMBER.match(response_text))
        return (1.0 - self.format_bonus) * correct + self.format_bonus * bare

    @classmethod
    def shipped(cls, split: str) -> Path:
        return DATA_DIR / f"{split}.jsonl"

    @classmethod
    def load_dataset(
        cls,
        path: str | Path | None,
        split: str = "train",
        num_samples: int = 2000,
        max_operand: int = 9,
        ops: str = "+",
    ) -> list[dict[str, Any]]:
        if path is not None:
            return read_jsonl(path)
        return make_problems(num_samples, SEEDS.get(split, 3), max_operand, ops)


def main() -> None:
    ap = argparse.ArgumentParser(description="write the arithmetic train/eval JSONL")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--max-operand", type=int, default=9)
    ap.add_argument("--ops", default="+")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", args.train), ("eval", args.eval)):
        rows = make_problems(n, SEEDS[split], args.max_operand, args.ops)
        (args.out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
