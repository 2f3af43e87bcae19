"""Arithmetic with a calculator: the built-in task where tool use pays off.

``4821*39=`` → ``188019``. Multi-digit addition is already past the 6M demo model alone (its
SFT stays on the loss plateau, README), and multiplication more so. With a calculator tool the
task becomes copying: call ``calc`` with the expression, read the result, answer with it. SFT
on a few demonstrations of that, then RL on the exact-match reward of the final answer, should
lift held-out accuracy far above what the model reaches without the tool.

The conversation, in the demo tokenizer's chat format (``TOOL_CHAT_TEMPLATE``)::

    user: 4821*39=
    assistant: <tool_call>{"name": "calc", "arguments": {"expr": "4821*39"}}</tool_call></s>
    tool: 188019
    assistant: 188019</s>

The demo tokenizer has no chat special tokens, and a 256-position model has no room for JSON
schemas, so the minimal template writes ``role: content`` lines, closes assistant turns with
the EOS token (a turn ends where sampling stops, and SFT contexts match RL's), and does not
render ``tools`` (the demonstrations teach the one tool). (transformers renders templates with
``trim_blocks``, so the newline is written as ``{{ '\\n' }}``.) Tool calls are Hermes-style, so the
default parser reads them.
"""

from __future__ import annotations

import ast
import json
import operator
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from placerl.rollout.envs.protocol import EnvFactory, Message
from placerl.rollout.envs.tool_env import tool_env_factory
from placerl.rollout.tools.parsing import HermesParser

TOOL_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
MAX_DIGITS = 40  # a result longer than this is refused: the calculator is not a bignum service


def calc(expr: str) -> str:
    """Evaluate an integer arithmetic expression with +, - and *.

    Args:
        expr: the expression, e.g. "4821*39"
    """
    value = _evaluate(ast.parse(expr.strip(), mode="eval").body)
    return str(value)


def _evaluate(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        value = _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
        if len(str(abs(value))) > MAX_DIGITS:
            raise ValueError(f"result has more than {MAX_DIGITS} digits")
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError(f"unsupported expression: {ast.dump(node)[:60]}")


def call_text(expression: str) -> str:
    """The assistant's tool call for ``expression``, as the demonstrations write it."""
    body = json.dumps({"name": "calc", "arguments": {"expr": expression}})
    return f"<tool_call>{body}</tool_call>"


def final_answer_reward(messages: list[Message], row: Mapping[str, Any]) -> float:
    """1.0 when the last assistant turn is exactly the answer (and calls no tool), else 0.0."""
    last = messages[-1]["content"]
    if HermesParser().parse(last).calls:
        return 0.0
    return 1.0 if last.strip() == str(row["answer"]).strip() else 0.0


make_env: EnvFactory = tool_env_factory([calc], reward=final_answer_reward)


def is_held_out(expression: str) -> bool:
    """The eval split: a deterministic tenth of all problems, never seen in training."""
    return zlib.crc32(expression.encode()) % 10 == 0


@dataclass(frozen=True)
class ToolArithmeticTask:
    """Problems ``a<op>b=`` with operands of ``min_digits``..``max_digits`` digits."""

    min_digits: int = 3
    max_digits: int = 4
    ops: str = "+*"
    split: str = "train"  # "train" or "eval": disjoint sets of problems

    def expressions(self, n: int, seed: int) -> list[str]:
        rng = random.Random(seed)
        out: list[str] = []
        while len(out) < n:
            a, b = (self._operand(rng) for _ in range(2))
            expression = f"{a}{rng.choice(self.ops)}{b}"
            if is_held_out(expression) == (self.split == "eval"):
                out.append(expression)
        return out

    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(10 ** (digits - 1), 10**digits - 1)

    def prompt_rows(self, n: int, seed: int) -> list[dict]:
        """Prompt dataset rows: ``prompt`` and the ``answer`` the reward checks."""
        return [{"prompt": f"{e}=", "answer": calc(e)} for e in self.expressions(n, seed)]

    def sft_rows(self, n: int, seed: int) -> list[dict]:
        """Demonstrations as ``messages`` rows, two per problem: one teaching the call, one
        teaching the answer after the result (the SFT stage trains a row's last turn)."""
        rows = []
        for e in self.expressions(n, seed):
            conversation = demonstration(e)
            rows += [{"messages": conversation[:2]}, {"messages": conversation}]
        return rows


def demonstration(expression: str) -> list[Message]:
    """The whole tool-using conversation for one problem."""
    result = calc(expression)
    return [
        {"role": "user", "content": f"{expression}="},
        {"role": "assistant", "content": call_text(expression)},
        {"role": "tool", "name": "calc", "content": result},
        {"role": "assistant", "content": result},
    ]
