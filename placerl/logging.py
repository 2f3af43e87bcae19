"""Where a run's numbers go: ``metrics.jsonl``, trackers, a live progress bar, a timeline.

``metrics.jsonl`` is the source of truth (plots and comparisons are read back from it); it
holds one JSON object per logged step, flushed line by line so a crash loses at most the line
being written. The trackers of ``trainer.report_to`` (TensorBoard, W&B: ``placerl/trackers``)
and the rich progress bar are views of the same numbers. The bar shows the stage's losses,
reward and KL of the last step (``kl/k3``, the estimate that is never negative; see
``algos/kl.kl_metrics``) and the latest evaluation.

An evaluation is also printed when it is computed, with a few held-out prompts and what the
model answered; those samples go to ``samples.jsonl`` (one object per sample: step, prompt,
response, and reward / answer / reference where known) and to the trackers as text.

Resume: a run that crashed after its last checkpoint has already logged steps the resumed run
will log again. ``MetricsLogger(start_step=k)`` therefore first drops every line with
``step > k`` from ``metrics.jsonl``, ``timeline.jsonl`` and ``samples.jsonl`` (and any torn, unparseable line),
rewriting each file atomically (a temp file in the same directory, then ``os.replace``), and
every event after step k from the TensorBoard files (``trackers.drop_tensorboard_steps``), so
each step has one point there too.
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
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from placerl.errors import UserError
from placerl.timing import Span, timeline_record
from placerl.trackers import TB_DIR, drop_tensorboard_steps, open_trackers

METRICS_FILE = "metrics.jsonl"
TIMELINE_FILE = "timeline.jsonl"
SAMPLES_FILE = "samples.jsonl"
__all__ = ["TB_DIR", "MetricsLogger", "drop_steps_after", "read_metrics"]
# The evaluation numbers the progress bar shows (the first two a stage reports), short names.
EVAL_HEADLINE = {
    "eval/accuracy": "acc",
    "eval/pairwise_accuracy": "pair_acc",
    "eval/preference_accuracy": "pref_acc",
    "eval/reward": "reward",
    "eval/loss": "loss",
}
# Characters of a prompt or response printed to the console (the JSONL keeps them whole).
SHOWN_CHARS = 160
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


def _json_safe(sample: dict[str, Any], nested: bool = False) -> dict[str, Any]:
    """Sample fields as JSON values: numbers cleaned like metrics, the rest as text; with
    ``nested``, dicts and lists (an episode's conversation) stay JSON objects and arrays."""
    out: dict[str, Any] = {}
    for key, value in sample.items():
        if value is None or isinstance(value, str):
            out[key] = value
        elif isinstance(value, numbers.Number):
            out[key] = _clean_value(value)
        elif nested and isinstance(value, (dict, list)):
            out[key] = json.loads(json.dumps(value, default=str))
        else:
            out[key] = str(value)
    return out


def _shorten(text: str) -> str:
    """Quoted, so an empty or all-whitespace answer is visible and newlines stay on one line."""
    text = repr(text)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 2] + "…" + text[-1]


def _sample_line(sample: dict[str, Any]) -> str:
    """``'prompt' → 'response'  (reward 1, answer '42')`` for the console (nested values,
    e.g. an episode's whole conversation, are for samples.jsonl only)."""
    extras = ", ".join(
        f"{k} {_compact(float(v)) if isinstance(v, numbers.Real) else _shorten(str(v))}"
        for k, v in sample.items()
        if k not in ("prompt", "response") and v is not None and not isinstance(v, (dict, list))
    )
    line = _shorten(str(sample.get("prompt", "")))
    if "response" in sample:
        line += f" → {_shorten(str(sample['response']))}"
    return f"{line}  ({extras})" if extras else line


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


def drop_steps_after(run_dir: Path, step: int) -> None:
    """Forget every logged step after ``step`` (−1: all of them) in ``metrics.jsonl``,
    ``timeline.jsonl``, ``samples.jsonl`` and the TensorBoard event files: what a resume
    from ``step`` (or a fresh start) will log again is then logged once."""
    for name in (METRICS_FILE, TIMELINE_FILE, SAMPLES_FILE):
        _rewrite_jsonl(Path(run_dir) / name, keep_step_at_most=step)
    drop_tensorboard_steps(Path(run_dir), step)


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
        report_to: Iterable[str] = ("tensorboard",),
        description: str = "train",
        console: Console | None = None,
        run_config: dict | None = None,
        wandb_project: str | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self.description = description
        self.console = console or Console()
        drop_steps_after(self.run_dir, start_step)
        # Line-buffered appends: every record reaches the OS as soon as it is written.
        self._metrics = open(self.run_dir / METRICS_FILE, "a", buffering=1)  # noqa: SIM115
        self._timeline: Any = None  # opened on first spans, so the file means "has spans"
        self._samples: Any = None  # likewise: opened on the first samples
        self._trackers = open_trackers(
            list(report_to),
            self.run_dir,
            name=f"{self.run_dir.name}/{description}",
            project=wandb_project,
            config=run_config,
        )
        self._latest_eval = ""
        self._progress: Progress | None = None
        if enable_progress:
            self._progress = self._start_progress(description, start_step)

    def _start_progress(self, description: str, start_step: int) -> Progress:
        """Description, bar, M/N, elapsed, ETA and a free-text field for live metrics."""
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[live]}", table_column=Column(ratio=1, overflow="fold")),
            console=self.console,
        )
        self._task = progress.add_task(
            description, total=self.total_steps, completed=start_step, live=""
        )
        progress.start()
        return progress

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record one step: a JSONL line, tracker scalars, and a progress-bar update."""
        record: dict[str, Any] = {"step": step}
        record.update({key: _clean_value(value) for key, value in metrics.items()})
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        finite = {k: v for k, v in record.items() if k != "step" and v is not None}
        for tracker in self._trackers:  # None: was NaN/inf, trackers can't plot it
            tracker.scalars(step, finite)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, live=self._live_fields(metrics))

    def _live_fields(self, metrics: dict[str, Any]) -> str:
        """The headline numbers next to the bar: reward and KL (RL), every loss of the step,
        and the latest evaluation (kept from the step that computed it)."""
        parts = []
        kl_key = "kl/k3" if "kl/k3" in metrics else "kl/mean"  # k3: never negative
        for label, key in (("reward", "reward/mean"), ("kl", kl_key)):
            if key in metrics:
                parts.append(f"{label} {_compact(float(metrics[key]))}")
        losses = sorted(k for k in metrics if k.startswith("loss/"))
        if len(losses) == 1:
            parts.append(f"loss {_compact(float(metrics[losses[0]]))}")
        elif losses:
            parts.append(
                "loss " + " ".join(f"{k[5:]}={_compact(float(metrics[k]))}" for k in losses)
            )
        if self._latest_eval:
            parts.append(self._latest_eval)
        return escape("  ".join(parts))

    def evaluation(self, step: int, result: dict[str, Any]) -> None:
        """An evaluation just computed: printed (numbers, then a few held-out samples), kept
        for the progress bar, and its samples written to ``samples.jsonl`` and the trackers.

        ``result`` maps ``eval/*`` names to numbers; a ``samples`` attribute (see
        ``placerl.evaluation.Evaluation``), when present, lists dicts with at least
        ``prompt`` (and ``response`` for generated answers).
        """
        values = {k: float(v) for k, v in result.items() if isinstance(v, numbers.Real)}
        samples = list(getattr(result, "samples", []) or [])
        if not values and not samples:
            return
        shown = [k for k in EVAL_HEADLINE if k in values][:2]
        self._latest_eval = f"eval@{step} " + " ".join(
            f"{EVAL_HEADLINE[k]}={_compact(values[k])}" for k in shown
        )
        listing = ", ".join(f"{k.removeprefix('eval/')} {_compact(v)}" for k, v in values.items())
        self.console.print(f"[bold]{escape(self.description)} eval @ step {step}[/]: {listing}")
        for sample in samples:
            self.console.print("  " + escape(_sample_line(sample)), highlight=False)
        if samples:
            self._write_samples(step, samples)
        if self._progress is not None:
            self._progress.update(self._task, live=self._live_fields({}))

    def _write_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        if self._samples is None:
            self._samples = open(self.run_dir / SAMPLES_FILE, "a", buffering=1)  # noqa: SIM115
        rows = [{"step": step, **_json_safe(sample, nested=True)} for sample in samples]
        for row in rows:
            self._samples.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._samples.flush()
        for tracker in self._trackers:
            tracker.samples(step, "eval/samples", [_json_safe(s) for s in samples])

    def log_spans(self, spans: Iterable[Span | tuple], step: int | None = None) -> None:
        """Append timeline spans (worker, phase, start, end) to ``timeline.jsonl``."""
        if self._timeline is None:
            self._timeline = open(self.run_dir / TIMELINE_FILE, "a", buffering=1)  # noqa: SIM115
        for span in spans:
            self._timeline.write(json.dumps(timeline_record(span, step)) + "\n")
        self._timeline.flush()

    def print(self, message: str, plain: bool = False) -> None:
        """Print above the progress bar (e.g. a stage summary) without breaking it;
        ``plain``: as is (no markup, no highlighting, long lines not wrapped)."""
        if plain:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            self.console.print(message)

    def close(self) -> None:
        """Stop the bar and flush/close every file and tracker; safe to call twice."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        trackers, self._trackers = self._trackers, []
        for tracker in trackers:
            tracker.close()
        for handle in (self._metrics, self._timeline, self._samples):
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
