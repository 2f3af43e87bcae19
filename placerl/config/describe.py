"""``placerl train --help-config``: every config field with its type, default and description.

Generated from the pydantic schema (``RunConfig`` and the section models it composes), so the
reference cannot drift from what the loader accepts. Fields are grouped by section in the
order the schema declares them; a section nested in a dict (``placement.roles``) is listed
under ``placement.roles.<role>``.
"""

from __future__ import annotations

import enum
import json
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


@dataclass(frozen=True)
class FieldDoc:
    """One leaf field of the schema, as the reference prints it."""

    key: str  # dotted, e.g. "trainer.report_to"
    type: str
    default: str
    description: str


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model an annotation holds directly (``X`` or ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _section_model(a) is not None]
        return models[0] if len(models) == 1 else None
    return None


def _dict_of_sections(annotation: Any) -> tuple[Any, type[BaseModel]] | None:
    """(key type, section model) for ``dict[K, Section]``."""
    if typing.get_origin(annotation) is dict:
        key, value = typing.get_args(annotation)
        model = _section_model(value)
        if model is not None:
            return key, model
    return None


def type_name(annotation: Any) -> str:
    """A short, YAML-minded name: ``int``, ``float | null``, ``fp32 | bf16``, ``list[str]``."""
    if annotation is type(None):
        return "null"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple, dict, set):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(str(m.value) for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "(required)"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "(required)"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, enum.Enum):
        value = value.value
    return json.dumps(value) if not isinstance(value, str) else value


def iter_fields(model: type[BaseModel], prefix: str = "") -> Iterator[FieldDoc]:
    """Every leaf field of ``model``, depth first, in declaration order."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section_model(field.annotation)
        if section is not None:
            if section is not field.annotation:  # an optional section (X | None): say so
                desc = field.description or ""
                yield FieldDoc(key, type_name(field.annotation), _default(field), desc)
            yield from iter_fields(section, key + ".")
            continue
        nested = _dict_of_sections(field.annotation)
        yield FieldDoc(key, type_name(field.annotation), _default(field), field.description or "")
        if nested is not None:
            key_type, section = nested
            yield from iter_fields(section, f"{key}.<{type_name(key_type).replace(' ', '')}>.")


def _section_of(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:-1]) if len(parts) > 1 else ""


def render(model: type[BaseModel], section: str | None = None, width: int = 96) -> str:
    """The reference as text: one block per section, one entry per field.

    ``section`` (e.g. ``trainer``) keeps only that section and the sections under it.
    """
    docs = list(iter_fields(model))
    if section:
        docs = [d for d in docs if d.key.startswith(section + ".")]
    groups: dict[str, list[FieldDoc]] = {}
    for doc in docs:
        groups.setdefault(_section_of(doc.key), []).append(doc)
    lines: list[str] = []
    for group, members in groups.items():
        lines += ["", f"[{group or 'top level'}]"]
        for doc in members:
            lines.append(f"  {doc.key}: {doc.type} = {doc.default}")
            lines += textwrap.wrap(
                doc.description, width, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
    return "\n".join(lines).lstrip("\n") + "\n"


def section_names(model: type[BaseModel]) -> list[str]:
    """Every section the reference lists, nested ones too (``model.lora``, ``rollout.vllm``,
    ``placement.roles``), in the listing's order: what ``--help-config SECTION`` takes."""
    names: dict[str, None] = {}
    for doc in iter_fields(model):
        parts = _section_of(doc.key).split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(p for p in parts[:depth] if not p.startswith("<"))
            if name:
                names[name] = None
    return list(names)
