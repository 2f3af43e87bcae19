"""YAML config files plus ``dotted.key=value`` overrides, validated by a pydantic schema.

Every mistake a user can make here (missing file, bad YAML, unknown or mistyped key, value out
of range) becomes one ``UserError`` that names the key, the value, what was expected, and
where the key came from: ``file:line`` for the YAML file, "from override" for the CLI. The
line numbers come from composing the YAML a second time into nodes, which keep their marks.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from placerl.config.aliases import same_name_elsewhere, unknown_key_hint
from placerl.config.describe import iter_fields
from placerl.errors import UserError

M = TypeVar("M", bound=BaseModel)

_MAX_SHOWN = 60  # characters of an offending value to quote in a message
_FROM_OVERRIDE = "from override"


def load_config(path: str | Path | None, overrides: Sequence[str], schema: type[M]) -> M:
    """Read ``path`` (optional), apply ``overrides`` in order, and validate against ``schema``."""
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        path = Path(path)
        data, lines = _read_yaml(path)
    parsed = parse_overrides(overrides)
    _clear_alternatives(data, parsed, getattr(schema, "exclusive_keys", ()))
    for key, value in parsed.items():
        _set_dotted(data, key, value)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        origin = _Origin(str(path) if path is not None else None, lines, list(parsed))
        raise _translate(exc, schema, origin, data) from None


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=3", "x=[1,2]"]`` -> ``{"a.b": 3, "x": [1, 2]}``; values are parsed as YAML so
    numbers, booleans, ``null`` and lists mean what they would in the file. Later wins."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, value = _parse_override(item)
        parsed.pop(key, None)  # re-insert so the order of application is the order given
        parsed[key] = value
    return parsed


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML, so a run directory records exactly what ran."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --- reading ---------------------------------------------------------------------------------


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse the file and map each dotted key path to the 1-based line it is written on."""
    if not path.exists():
        raise UserError(f"config file not found: {path}", where=str(path))
    if not path.is_file():
        raise UserError(f"config path is not a file: {path}", where=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file: {exc}", where=str(path)) from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise UserError(
            f"the top level of a config file must be a mapping of keys to values, "
            f"got a {type(data).__name__}",
            where=str(path),
        )
    lines: dict[str, int] = {}
    _collect_lines(root, "", lines, path)
    return data, lines


def _yaml_error(exc: yaml.YAMLError, path: Path) -> UserError:
    """Point at ``file:line:column`` of the syntax error; PyYAML's marks are 0-based."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    opened = getattr(exc, "context_mark", None)
    if context and opened is not None and mark is not None and opened.line != mark.line:
        context = f"{context} (started on line {opened.line + 1})"
    detail = f"{context}: {problem}" if context else problem
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    return UserError(f"invalid YAML: {detail}", where=where)


def _collect_lines(node: yaml.Node, prefix: str, lines: dict[str, int], path: Path) -> None:
    """Walk the composed node tree; also reject duplicate keys, which PyYAML silently merges."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UserError(
                    f"duplicate key '{prefix}{key}' (first written on line {seen[key]})",
                    where=f"{path}:{line}",
                )
            seen[key] = line
            lines[prefix + key] = line
            _collect_lines(value_node, f"{prefix}{key}.", lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[f"{prefix}{index}"] = item.start_mark.line + 1
            _collect_lines(item, f"{prefix}{index}.", lines, path)


# --- overrides -------------------------------------------------------------------------------


def _parse_override(item: str) -> tuple[str, Any]:
    """Split ``key=value`` at the first ``=`` and parse the value as a YAML scalar or list."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep:
        raise UserError(
            f"override '{item}' has no '='; expected dotted.key=value, e.g. trainer.lr=1e-5",
            where="override",
        )
    if not key or any(not part for part in key.split(".")):
        raise UserError(
            f"override '{item}' has an empty key part; expected dotted.key=value",
            where="override",
        )
    if raw.strip() == "":
        return key, ""
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(
            f"override '{item}': value is not valid YAML ({problem})", where="override"
        ) from None


def _clear_alternatives(
    data: dict[str, Any], parsed: dict[str, Any], groups: Sequence[Sequence[str]]
) -> None:
    """An override of one key of an exclusive group (e.g. ``reward.model=DIR`` over a file
    that sets ``reward.function``) replaces the file's choice: the others are cleared, unless
    they are overridden too (then the schema reports the conflict)."""
    for group in groups:
        chosen = [key for key in group if parsed.get(key) is not None]
        if len(chosen) != 1:
            continue
        for other in group:
            if other != chosen[0] and other not in parsed:
                *parents, leaf = other.split(".")
                node: Any = data
                for part in parents:
                    node = node.get(part) if isinstance(node, dict) else None
                if isinstance(node, dict) and node.get(leaf) is not None:
                    node[leaf] = None


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``a.b.c``, creating the intermediate mappings; a
    section the file sets to null (``lora: null``, as ``placerl init`` writes it) is one."""
    *parents, leaf = key.split(".")
    node = data
    for depth, part in enumerate(parents):
        if node.get(part) is None:
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            owner = ".".join(parents[: depth + 1])
            raise UserError(
                f"cannot set '{key}': '{owner}' holds {_show(child)}, not a mapping",
                where="override",
            )
        node = child
    node[leaf] = value


# --- validation errors -----------------------------------------------------------------------


class _Origin:
    """Where each key came from: a YAML line or a CLI override (overrides win)."""

    def __init__(self, file: str | None, lines: dict[str, int], override_keys: list[str]):
        self.file = file
        self.lines = lines
        self.override_keys = override_keys

    def of(self, dotted: str) -> str | None:
        """``file:line`` for the nearest written ancestor of ``dotted``, or "from override"."""
        for key in self.override_keys:
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return _FROM_OVERRIDE
        parts = dotted.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line is not None:
                return f"{self.file}:{line}"
            parts.pop()
        return None


def _translate(
    exc: ValidationError, schema: type[BaseModel], origin: _Origin, data: dict[str, Any]
) -> UserError:
    """Turn pydantic's error list into one message with one line per problem."""
    problems: list[tuple[str, str | None]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(part) for part in loc) or "(top level)"
        problems.append((f"{dotted}: {_describe(err, loc, schema, data)}", origin.of(dotted)))
    if len(problems) == 1:
        text, where = problems[0]
        where = "override" if where == _FROM_OVERRIDE else where
        return UserError(f"invalid config: {text}", where=where or origin.file or "config")
    listing = "\n".join(f"  - {text}{_located(where)}" for text, where in problems)
    return UserError(
        f"invalid config, {len(problems)} problems:\n{listing}", where=origin.file or "config"
    )


def _located(where: str | None) -> str:
    """ " (at file:line)" or " (from override)" after a problem in a listing."""
    if where is None:
        return ""
    return f" ({where})" if where == _FROM_OVERRIDE else f" (at {where})"


def _describe(
    err: Mapping[str, Any], loc: tuple[Any, ...], schema: type[BaseModel], data: dict[str, Any]
) -> str:
    """The problem in words: what is wrong, what was given, what would be valid."""
    kind = err["type"]
    if kind == "extra_forbidden":
        hint = _unknown_key_hint(loc, schema, data)
        return f"unknown key; {hint} (got {_show(err.get('input'))})"
    if kind == "missing":
        return "required key is missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{message} (got {_show(err.get('input'))})"


def _unknown_key_hint(loc: tuple[Any, ...], schema: type[BaseModel], data: dict[str, Any]) -> str:
    """Which key was meant, best guess first: another library's name for a placerl key
    (``learning_rate`` → ``optim.lr``), a near miss at the same level, the same name in
    another section, else the list of valid keys at that level."""
    dotted = ".".join(str(part) for part in loc)
    valid = _valid_keys(schema, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    keys = [doc.key for doc in iter_fields(schema)]
    hint = (
        unknown_key_hint(dotted, data)
        or (f"did you mean '{close[0]}'?" if close else None)
        or same_name_elsewhere(dotted, keys)
    )
    return hint or f"valid keys here: {', '.join(sorted(valid))}"


def _valid_keys(schema: type[BaseModel], parent: tuple[Any, ...]) -> list[str]:
    """Field names of the model(s) reached by following ``parent`` from ``schema``.

    Parts that are not field names (list indices, dict keys, pydantic's union tags) keep the
    current candidates, or narrow a union to the member class they name."""
    candidates: list[type[BaseModel]] = [schema]
    for part in parent:
        by_field = [m for m in candidates if isinstance(part, str) and part in m.model_fields]
        if by_field:
            annotations = [m.model_fields[part].annotation for m in by_field]
            candidates = [c for a in annotations for c in _models_in(a)]
            continue
        by_name = [m for m in candidates if m.__name__ == part]
        if by_name:
            candidates = by_name
    names = {name for model in candidates for name in model.model_fields}
    return sorted(names)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every BaseModel class inside an annotation (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return []
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _show(value: Any) -> str:
    """A short repr of an offending value for a one-line message."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
