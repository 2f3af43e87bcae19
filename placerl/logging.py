"""Where a run's numbers go: ``metrics.jsonl``, TensorBoard, a live progress bar, a timeline.

``metrics.jsonl`` is the source of truth (plots and comparisons are read back from it); it
holds one JSON object per logged step, flushed line by line so a crash loses at most the line
being written. TensorBoard and the rich progress bar are views of the same numbers.

Resume: a run that crashed after its last checkpoint has already logged steps the resumed run
will log again. ``MetricsLogger(start_step=k)`` therefore first drops every line with
``step > k`` from ``metrics.jsonl`` and ``timeline.jsonl`` (and any torn, unparseable line),
rewriting each file atomically (a temp file in the same directory, then ``os.replace``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from placerl.errors import UserError
from placerl.timing import Span, timeline_record

METRICS_FILE = "metrics.jsonl"
TIMELINE_FILE = "timeline.jsonl"
TB_DIR = "tb"
# Significant digits kept in metrics.jsonl: float32 training noise lives below this anyway,
# and it keeps lines short and diffable.
SIGNIFICANT_DIGITS = 7


def _clean_value(value: Any) -> int | float | None:
    """A JSON-safe scalar: ints stay ints, floats are rounded, NaN/inf become None (null)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)  # also accepts 0-d tensors and numpy scalars
    if not math.isfinite(number):
        return None
    return float(f"{number:.{SIGNIFICANT_DIGITS}g}")


def _compact(value: float) -> str:
    """A short human-readable number for the progress bar."""
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def _rewrite_jsonl(path: Path, keep_step_at_most: int) -> None:
    """Atomically drop lines with ``step > keep_step_at_most`` (and torn lines) from ``path``."""
    if not path.exists():
        return
    kept: list[str] = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write
        step = record.get("step") if isinstance(record, dict) else None
        if step is None or step <= keep_step_at_most:
            kept.append(line)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(line + "\n" for line in kept)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records of ``run_dir/metrics.jsonl``, in file order.

    A torn last line (a crash mid-write) is ignored; a malformed line elsewhere is a
    ``UserError`` naming ``file:line``.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise UserError("no metrics file (is this a run directory?)", where=str(path))
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSONL file of objects, tolerating only a torn final line."""
    lines = path.read_text().splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                break
            raise UserError(f"not valid JSON: {e.msg}", where=f"{path}:{number}") from e
        if not isinstance(record, dict):
            raise UserError("expected a JSON object per line", where=f"{path}:{number}")
        records.append(record)
    return records


class MetricsLogger:
    """Writes each step's metrics to JSONL, TensorBoard and a live rich progress bar."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int = 0,
        enable_progress: bool = True,
        tensorboard: bool = True,
        description: str = "train",
        console: Console | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self.console = console or Console()
        for name in (METRICS_FILE, TIMELINE_FILE):
            _rewrite_jsonl(self.run_dir / name, keep_step_at_most=start_step)
        # Line-buffered appends: every record reaches the OS as soon as it is written.
        self._metrics = open(self.run_dir / METRICS_FILE, "a", buffering=1)  # noqa: SIM115
        self._timeline: Any = None  # opened on first spans, so the file means "has spans"
        self._writer = self._open_tensorboard() if tensorboard else None
        self._progress: Progress | None = None
        if enable_progress:
            self._progress = self._start_progress(description, start_step)

    def _open_tensorboard(self) -> Any:
        """A SummaryWriter under ``run_dir/tb``; imported lazily because it is slow to load."""
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / TB_DIR), flush_secs=10)

    def _start_progress(self, description: str, start_step: int) -> Progress:
        """Description, bar, M/N, elapsed, ETA and a free-text field for live metrics."""
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[live]}"),
            console=self.console,
        )
        self._task = progress.add_task(
            description, total=self.total_steps, completed=start_step, live=""
        )
        progress.start()
        return progress

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record one step: a JSONL line, TensorBoard scalars, and a progress-bar update."""
        record: dict[str, Any] = {"step": step}
        record.update({key: _clean_value(value) for key, value in metrics.items()})
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and value is not None:  # None: was NaN/inf, TB can't plot it
                    self._writer.add_scalar(key, value, global_step=step)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, live=self._live_fields(metrics))

    @staticmethod
    def _live_fields(metrics: dict[str, Any]) -> str:
        """The headline numbers shown next to the bar, when the algorithm reports them."""
        parts = []
        for label, key in (("reward", "reward/mean"), ("kl", "kl/mean")):
            if key in metrics:
                parts.append(f"{label} {_compact(float(metrics[key]))}")
        return "  ".join(parts)

    def log_spans(self, spans: Iterable[Span | tuple], step: int | None = None) -> None:
        """Append timeline spans (worker, phase, start, end) to ``timeline.jsonl``."""
        if self._timeline is None:
            self._timeline = open(self.run_dir / TIMELINE_FILE, "a", buffering=1)  # noqa: SIM115
        for span in spans:
            self._timeline.write(json.dumps(timeline_record(span, step)) + "\n")
        self._timeline.flush()

    def print(self, message: str) -> None:
        """Print above the progress bar (e.g. a stage summary) without breaking it."""
        self.console.print(message)

    def close(self) -> None:
        """Stop the bar and flush/close every file; safe to call twice."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for handle in (self._metrics, self._timeline):
            if handle is not None and not handle.closed:
                handle.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
