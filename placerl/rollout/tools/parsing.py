"""Tool calls read from the model's text, in the chat template's format.

The default is Hermes / Qwen2.5: each call is ``<tool_call>{"name": ..., "arguments": {...}}
</tool_call>`` anywhere in the assistant's text (whitespace around the JSON allowed). A call
that cannot be read — not JSON, not an object with a string ``name`` and an object of
``arguments``, or a ``<tool_call>`` never closed — is kept as a ``BadCall`` with the reason, so
the model gets told (failures are data), never dropped silently as veRL's parser does.

Another format plugs in as any object with ``parse(text) -> ParsedTurn`` (``ToolCallParser``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolCall:
    """A well-formed call: the tool's name and its JSON arguments."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class BadCall:
    """A call the parser could not read: its raw text and why."""

    raw: str
    reason: str


@dataclass(frozen=True)
class ParsedTurn:
    """An assistant turn's text outside its tool calls, and the calls in order."""

    content: str
    calls: tuple[ToolCall | BadCall, ...]


class ToolCallParser(Protocol):
    def parse(self, text: str) -> ParsedTurn: ...


@dataclass(frozen=True)
class HermesParser:
    """``<tool_call>{json}</tool_call>`` (Hermes, Qwen2.5, Qwen3 templates)."""

    start: str = "<tool_call>"
    end: str = "</tool_call>"

    def parse(self, text: str) -> ParsedTurn:
        pattern = re.compile(re.escape(self.start) + r"(.*?)" + re.escape(self.end), re.DOTALL)
        calls: list[ToolCall | BadCall] = [_read_call(m.group(1)) for m in pattern.finditer(text)]
        rest = pattern.sub("", text)
        if self.start in rest:  # opened and never closed (e.g. cut by the token limit)
            raw = rest[rest.index(self.start) :]
            calls.append(BadCall(raw, f"{self.start} without {self.end}"))
            rest = rest[: rest.index(self.start)]
        return ParsedTurn(rest.strip(), tuple(calls))


def _read_call(body: str) -> ToolCall | BadCall:
    try:
        value = json.loads(body)
    except json.JSONDecodeError as err:
        return BadCall(body, f"not valid JSON ({err.msg} at char {err.pos})")
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return BadCall(body, 'expected a JSON object with a string "name"')
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return BadCall(body, '"arguments" is a string that is not JSON')
    if not isinstance(arguments, dict):
        return BadCall(body, '"arguments" must be a JSON object')
    return ToolCall(value["name"], arguments)
