"""A tool is a plain Python function with type hints and a Google-style docstring, as in
transformers' chat templates and TRL: its JSON schema comes from
``transformers.utils.get_json_schema`` and reaches the model through the tokenizer's chat
template (``apply_chat_template(..., tools=[schema, ...])``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers.utils import get_json_schema
from transformers.utils.chat_template_utils import (
    DocstringParsingException,
    TypeHintParsingException,
)

from placerl.errors import UserError


@dataclass(frozen=True)
class Tool:
    """A callable the model may call by ``name``; ``schema`` is what the template renders."""

    name: str
    fn: Callable[..., Any]
    schema: dict[str, Any]

    def bind(self, arguments: dict[str, Any]) -> inspect.BoundArguments:
        """The call's arguments bound to the function's signature; TypeError when they do
        not fit (missing, unknown or repeated names)."""
        return inspect.signature(self.fn).bind(**arguments)


def as_tool(fn: Callable[..., Any] | Tool, where: str = "env.tools") -> Tool:
    """``fn`` as a Tool, its schema read from its hints and docstring; a function the schema
    cannot be read from is the user's to fix (one clear message)."""
    if isinstance(fn, Tool):
        return fn
    name = getattr(fn, "__name__", repr(fn))
    try:
        schema = get_json_schema(fn)
    except (DocstringParsingException, TypeHintParsingException) as err:
        raise UserError(
            f"tool {name!r}: {err} (a tool needs type hints on every argument and a docstring "
            f"with an 'Args:' section describing each)",
            where=where,
        ) from None
    return Tool(schema["function"]["name"], fn, schema)
