"""What a run reports when a worker process dies under it.

A dead worker (killed, out of memory, its node gone) cannot be replaced mid-step: its share of
the model state is gone. The runtime detects it while waiting for any call (Ray reports the
death within about a second), stops every other worker (they would wait forever in a
collective), and raises ``WorkerFailure`` naming the role, the rank and the process. Nothing
is written after that: checkpoints are atomic, so the last complete one is intact, and the CLI
prints the exact command that resumes from it. No Ray import here: the CLI catches this type.
"""

from __future__ import annotations


class WorkerFailure(RuntimeError):
    """A worker process of the run died; the run can be resumed from its last checkpoint."""

    exit_code = 3

    def __init__(self, message: str, role: str | None = None, rank: int | None = None):
        self.message = message
        self.role = role
        self.rank = rank
        super().__init__(message)
