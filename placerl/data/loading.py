"""Load local dataset files (JSONL/JSON, Parquet, CSV) into a ``datasets.Dataset``.

``datasets`` does the reading, but its errors name neither the line nor the column a user has
to fix, so each file is checked first with the plain standard library (JSON is parsed line by
line, CSV and Parquet are opened for a row count) and every problem becomes a ``UserError``
that says which file, which line, and what was expected. Nothing here touches the network:
the builders read local files into memory, and their cache goes to a temporary directory so a
stale cache can never stand in for an edited file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from placerl.errors import UserError

_READERS = {
    ".jsonl": datasets.Dataset.from_json,
    ".json": datasets.Dataset.from_json,
    ".parquet": datasets.Dataset.from_parquet,
    ".csv": datasets.Dataset.from_csv,
}


def load_records(path: str | Path, required: Sequence[str], kind: str) -> datasets.Dataset:
    """Read a local file of records and check that every column in ``required`` is present.

    ``kind`` names the dataset in messages ("preference dataset"), so a user with several data
    files in one config knows which one is wrong."""
    path = Path(path)
    reader = _reader_for(path, kind)
    extra = _prescan(path, kind)
    dataset = _read(reader, path, kind, extra)
    if len(dataset) == 0:
        raise UserError(f"{kind} file has no rows", where=str(path))
    require_columns(dataset, required, kind, str(path))
    return dataset


def require_columns(
    dataset: datasets.Dataset, required: Sequence[str], kind: str, where: str
) -> None:
    """Name every missing column and list the ones that are there (a typo is then obvious)."""
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise UserError(
            f"{kind} is missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)}; columns present: "
            f"{', '.join(dataset.column_names)}",
            where=where,
        )


def require_one_of(
    dataset: datasets.Dataset, choices: Sequence[Sequence[str]], kind: str, where: str
) -> tuple[str, ...]:
    """For formats with alternatives (SFT: prompt+completion, or messages): the first set of
    columns that is fully present, or a UserError listing every accepted set."""
    for columns in choices:
        if all(c in dataset.column_names for c in columns):
            return tuple(columns)
    accepted = " or ".join("+".join(repr(c) for c in columns) for columns in choices)
    raise UserError(
        f"{kind} needs columns {accepted}; columns present: {', '.join(dataset.column_names)}",
        where=where,
    )


def _reader_for(path: Path, kind: str):
    """The ``Dataset.from_*`` constructor for the file's extension, after checking it exists."""
    if not path.exists():
        raise UserError(f"{kind} file not found: {path}", where=str(path))
    if not path.is_file():
        raise UserError(f"{kind} path is not a file: {path}", where=str(path))
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise UserError(
            f"{kind} file has unsupported extension '{path.suffix}'; supported: "
            f"{', '.join(sorted(_READERS))}",
            where=str(path),
        )
    return reader


def _prescan(path: Path, kind: str) -> dict[str, Any]:
    """Find the problems ``datasets`` would report without a line number, or not at all;
    return any extra arguments the reader needs for this file."""
    suffix = path.suffix.lower()
    extra: dict[str, Any] = {}
    if suffix in (".jsonl", ".json"):
        rows = _scan_json(path, kind)
    elif suffix == ".csv":
        header, rows = _scan_csv(path, kind)
        # CSV has no types: keep every cell as text, so an answer "007" keeps its zeros and
        # an empty cell is "" (reported as empty) rather than a float NaN.
        features = datasets.Features({name: datasets.Value("string") for name in header})
        extra = {"features": features, "keep_default_na": False}
    else:
        rows = _scan_parquet(path, kind)
    if rows == 0:
        raise UserError(f"{kind} file has no rows", where=str(path))
    return extra


def _read_text(path: Path, kind: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {kind} file as UTF-8 text: {exc}", where=str(path)) from None


def _scan_json(path: Path, kind: str) -> int:
    """A JSON array of objects, or JSON Lines: one object per line, blank lines allowed."""
    text = _read_text(path, kind)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        return _scan_json_array(text, path, kind)
    rows = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{kind}: line {number} is not valid JSON ({exc.msg} at column {exc.colno}); "
                f"expected one JSON object per line",
                where=f"{path}:{number}",
            ) from None
        _expect_object(record, path, number, kind)
        rows += 1
    return rows


def _scan_json_array(text: str, path: Path, kind: str) -> int:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{kind}: invalid JSON ({exc.msg} at column {exc.colno})",
            where=f"{path}:{exc.lineno}",
        ) from None
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(
                f"{kind}: item {index} of the JSON array is a {_json_type(record)}, "
                f"expected an object of column: value",
                where=str(path),
            )
    return len(records)


def _expect_object(record: object, path: Path, number: int, kind: str) -> None:
    if not isinstance(record, dict):
        raise UserError(
            f"{kind}: line {number} is a JSON {_json_type(record)}, expected an object "
            f'like {{"prompt": ...}}',
            where=f"{path}:{number}",
        )


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _scan_csv(path: Path, kind: str) -> tuple[list[str], int]:
    """The header and the rows after it (0 or 1: enough to tell an empty file)."""
    with open(path, newline="", encoding="utf-8") as handle:
        try:
            reader = csv.reader(handle)
            header = next(reader, [])
            return header, sum(1 for _, _ in zip(range(1), reader, strict=False))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {kind} CSV file: {exc}", where=str(path)) from None


def _scan_parquet(path: Path, kind: str) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise UserError(f"{kind} file is not valid Parquet: {exc}", where=str(path)) from None


def _read(reader, path: Path, kind: str, extra: dict[str, Any]) -> datasets.Dataset:
    """Run the ``datasets`` builder in memory, quietly, with a throwaway cache."""
    with tempfile.TemporaryDirectory(prefix="placerl-data-") as cache, _quiet_datasets():
        try:
            return reader(str(path), keep_in_memory=True, cache_dir=cache, **extra)
        except Exception as exc:  # the file is the user's; whatever broke, say where
            raise UserError(
                f"cannot read {kind} file: {_root_cause(exc)}", where=str(path)
            ) from exc


def _root_cause(exc: BaseException) -> str:
    """``datasets`` wraps the informative error (Arrow's) in a generic one; show the inner."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide the builder's progress bars for a local file, restoring the user's setting."""
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
