"""Tools for multi-turn episodes: plain Python functions, their JSON schemas, the parser of
the model's tool calls, and their execution with timeouts (failures become observations)."""

from placerl.rollout.tools.execution import Status, ToolBox, ToolOutcome
from placerl.rollout.tools.parsing import (
    BadCall,
    HermesParser,
    ParsedTurn,
    ToolCall,
    ToolCallParser,
)
from placerl.rollout.tools.schema import Tool, as_tool

__all__ = [
    "BadCall",
    "HermesParser",
    "ParsedTurn",
    "Status",
    "Tool",
    "ToolBox",
    "ToolCall",
    "ToolCallParser",
    "ToolOutcome",
    "as_tool",
]
