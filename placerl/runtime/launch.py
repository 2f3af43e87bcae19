"""How the pipeline starts a sample: at once, on a thread, or on remote rollout workers.

The runtime picks the launcher when it is built (``Runtime.launcher``):

- ``InlineLauncher`` (local default): samples at once in the caller's thread — exactly the
  staleness semantics of an overlapped run, without the overlap;
- ``ThreadLauncher``: samples on one background thread, which overlaps only where the GIL is
  released (inside torch kernels): in one CPU process both halves compete for the same cores;
- ``RemoteLauncher`` (Ray): the rollout workers start at once and overlap by themselves.

Inline and thread train bitwise alike (tested): the rollout copy and its generator are
touched by nothing else, and the pipeline syncs only while nothing is in flight.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from placerl.algos.online import Pending
from placerl.data.stream import PromptBatch
from placerl.timing import PhaseTimer


class Launcher(Protocol):
    # a timer of its own for work that runs while the caller goes on (None: the caller's)
    timer: PhaseTimer | None

    def launch(self, rollout, prompts: PromptBatch, timer: PhaseTimer) -> Pending: ...

    def close(self) -> None: ...


def _generate(rollout, prompts: PromptBatch, timer: PhaseTimer):
    with timer.phase("generate"):
        return rollout.sample(prompts)


class InlineLauncher:
    """Samples at once, in the caller's thread; a finished future."""

    timer = None

    def launch(self, rollout, prompts: PromptBatch, timer: PhaseTimer) -> Future:
        future: Future = Future()
        try:
            future.set_result(_generate(rollout, prompts, timer))
        except BaseException as err:  # re-raised by result(), where the batch is awaited
            future.set_exception(err)
        return future

    def close(self) -> None:
        pass


class ThreadLauncher:
    """Samples on one background thread, timed on a timer of its own."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="placerl-rollout")
        self.timer = PhaseTimer(worker="rollout")

    def launch(self, rollout, prompts: PromptBatch, timer: PhaseTimer) -> Future:
        return self._pool.submit(_generate, rollout, prompts, self.timer)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RemoteLauncher:
    """Rollout workers (Ray handles' ``generate_async``): running from now on."""

    timer = None

    def launch(self, rollout, prompts: PromptBatch, timer: PhaseTimer) -> Pending:
        return rollout.sample_async(prompts)

    def close(self) -> None:
        pass
