"""Turn-taking for side-by-side benchmarks run in one process."""

from __future__ import annotations

import threading
import time


class Baton:
    """Two trainers in two threads take turns, so that a busy machine slows both alike.

    Each hands over once per step (from inside a call both trainers make every step); the
    time a side waits for its turn lands inside its own step, is recorded per step, and the
    benchmarks subtract it.
    """

    def __init__(self, parties: list[str]):
        self.parties, self.turn, self.done = parties, parties[0], set()
        self.waits: dict[str, list[float]] = {p: [] for p in parties}
        self.cond = threading.Condition()

    def _other(self, me: str) -> str | None:
        others = [p for p in self.parties if p != me and p not in self.done]
        return others[0] if others else None

    def wait_turn(self, me: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == me or self._other(me) is None)

    def hand_over(self, me: str) -> float:
        """Give the turn away and wait for it back; returns (and records) the wait."""
        start = time.perf_counter()
        with self.cond:
            other = self._other(me)
            if other is not None:
                self.turn = other
                self.cond.notify_all()
        self.wait_turn(me)
        wait = time.perf_counter() - start
        self.waits[me].append(wait)
        return wait

    def finish(self, me: str) -> None:
        with self.cond:
            self.done.add(me)
            self.turn = self._other(me) or me
            self.cond.notify_all()
