"""The profile's progress bar (rich): what is being measured, and about how long is left.

The profile is a list of named steps, each with an estimate of its seconds on this machine
(``profile.plan_steps``). The bar's total is their sum; a finished step advances it by its
estimate, so rich's "time left" is the estimates left at the pace measured so far (a busy
machine shows a longer wait). A step can also report progress within itself (``advance``).
Off a terminal the bar is not drawn; each step's name is logged instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Steps:
    """A progress bar over named steps of estimated seconds."""

    def __init__(self, total_s: float, log: Callable[[str], None] | None = None, show=None):
        console = Console(file=sys.stderr)
        self.show = console.is_terminal if show is None else show
        self.log = log
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]profile[/bold] {task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.show,
            transient=False,
        )
        self.task = self.progress.add_task("starting", total=max(total_s, 1e-3))
        self.done = 0.0
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}  # each step's measured seconds

    def __enter__(self) -> Steps:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.update(self.task, completed=self.progress.tasks[0].total)
        self.progress.stop()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextmanager
    def step(self, name: str, estimate_s: float) -> Iterator[Callable[[float], None]]:
        """Measure ``name``; yields ``advance(share)`` for progress within the step."""
        if self.log is not None and not self.show:
            self.log(f"profile: {name}")
        self.progress.update(self.task, description=name)
        begun, base = time.perf_counter(), self.done
        reached = 0.0

        def advance(share: float) -> None:
            nonlocal reached
            reached = min(1.0, max(reached, share))
            self.progress.update(self.task, completed=base + reached * estimate_s)

        yield advance
        self.done = base + estimate_s
        self.times[name] = time.perf_counter() - begun
        self.progress.update(self.task, completed=self.done)

    def skip(self, name: str, estimate_s: float, why: str) -> None:
        """A step left out (the time box): the bar moves on, the log says so."""
        self.done += estimate_s
        self.times[name] = 0.0
        self.progress.update(self.task, completed=self.done)
        if self.log is not None:
            self.log(f"profile: {name} skipped ({why})")
