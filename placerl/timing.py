"""Named-phase wall timers for the controller's ``step()`` and a timeline of spans.

The controller reads as a dataflow of timed phases (generate → score → … → update). Each
``with timer.phase(name)`` adds its wall seconds to the current step's total for that name, so
a phase entered twice in one step (e.g. two micro-batches of ``update``) adds up. ``pop()``
hands the totals to the logger as ``time/<phase>`` plus ``time/step`` and starts a new step.

Every phase also leaves a ``Span`` (worker, phase, start, end) for the Gantt chart. Durations
come from ``time.perf_counter`` (monotonic, precise), but span ends are stored as
``time.time()``-based seconds: a per-process epoch offset, taken once at construction, maps the
perf counter onto the wall clock, so spans recorded by other processes (Ray workers, added with
``add_spans``) line up on one time axis.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple


class Span(NamedTuple):
    """One interval of work: who did what, from when to when (wall-clock seconds)."""

    worker: str
    phase: str
    start: float
    end: float


def timeline_record(span: Span | tuple, step: int | None = None) -> dict[str, Any]:
    """A span as the JSON object written to ``timeline.jsonl`` (one per line).

    Times are rounded to microseconds: ``time.time()`` values are ~1.7e9, so rounding to
    significant digits (as for metrics) would destroy them.
    """
    worker, phase, start, end = span
    return {
        "worker": str(worker),
        "phase": str(phase),
        "start": round(float(start), 6),
        "end": round(float(end), 6),
        "step": step,
    }


class PhaseTimer:
    """Accumulates wall seconds per named phase for the current step, and records spans.

    Nested phases are allowed but each is timed on its own, so their ``time/*`` values overlap
    (a stacked bar chart would double count them); prefer flat phases in ``step()``.
    """

    def __init__(self, worker: str = "controller"):
        self.worker = worker
        # Maps perf_counter() onto time.time() once, so spans are comparable across processes
        # yet durations keep perf_counter's monotonic precision.
        self._epoch = time.time() - time.perf_counter()
        self._totals: dict[str, float] = defaultdict(float)
        self._step_start = time.perf_counter()
        self.spans: list[Span] = []

    def now(self) -> float:
        """Current wall-clock time in seconds, on this timer's (perf_counter-based) clock."""
        return self._epoch + time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` body under ``name``; recorded even if the body raises."""
        start = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            self._totals[name] += end - start
            self.spans.append(Span(self.worker, name, self._epoch + start, self._epoch + end))

    def add_spans(self, spans: Iterable[Span | tuple]) -> None:
        """Add spans recorded elsewhere (e.g. by remote workers) to this timeline."""
        self.spans.extend(Span(*span) for span in spans)

    def pop_spans(self) -> list[Span]:
        """Return the spans recorded so far and forget them (the logger writes them out)."""
        spans, self.spans = self.spans, []
        return spans

    def pop(self) -> dict[str, float]:
        """This step's ``time/<phase>`` totals plus ``time/step``; then start a new step.

        ``time/step`` is the wall time since the previous ``pop`` (or construction), so it
        includes untimed work between phases: the gap to the sum of phases is overhead.
        """
        now = time.perf_counter()
        times = {f"time/{name}": seconds for name, seconds in self._totals.items()}
        times["time/step"] = now - self._step_start
        self._totals.clear()
        self._step_start = now
        return times
