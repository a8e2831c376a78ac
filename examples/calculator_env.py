"""A multi-turn tool-use environment: the model may write `<calc>EXPR</calc>`; the environment evaluates the
arithmetic expression safely and answers with `<result>VALUE</result>` as the next user turn. The episode ends when
the model answers without a tool call (or after max_turns model turns); reward 1 if its last number is the answer."""

from __future__ import annotations

import ast
import operator
import re
from typing import Any

from slime_rl.env_api import Env, ResetResult, StepResult

from .math_env import last_number, make_problems

_CALL = re.compile(r"<calc>(.*?)</calc>", re.S)
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def safe_eval(expr: str) -> int:
    """Integer arithmetic only: no names, calls or attributes, and bounded sizes."""

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and abs(node.value) < 10**12:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            value = _BINOPS[type(node.op)](ev(node.left), ev(node.right))
            if abs(value) > 10**24:  # bounded work: no towers of multiplications
                raise ValueError("result too large")
            return value
        raise ValueError(f"unsupported expression: {ast.dump(node)[:60]}")

    if len(expr) > 200:
        raise ValueError("expression too long")
    return ev(ast.parse(expr.strip(), mode="eval"))


class CalculatorEnv(Env):
    name = "calculator"
    max_turns = 3  # a tool call and its result, then the answer

    async def reset(self, sample: dict[str, Any]) -> ResetResult:
        self.sample = sample
        return ResetResult(
            messages=[
                {"role": "system", "content": "You can compute with <calc>expression</calc>; the result comes back."},
                {"role": "user", "content": sample["question"]},
            ]
        )

    async def step(self, response_text: str) -> StepResult:
        call = _CALL.search(response_text)
        if call is None:
            return StepResult(done=True, reward=float(last_number(response_text) == str(self.sample["answer"])))
        try:
            result = f"<result>{safe_eval(call.group(1))}</result>"
        except (ValueError, SyntaxError, ZeroDivisionError) as exc:
            result = f"<error>{exc}</error>"
        return StepResult(observation=result, done=False, reward=0.0, info={"tool_calls": 1})

    @classmethod
    def load_dataset(cls, path, split: str = "train", num_samples: int = 500) -> list[dict[str, Any]]:
        if path is not None:
            return super().load_dataset(path, split)
        return make_problems(num_samples, 11 if split == "train" else 12, max_operand=99, ops="+-*")
