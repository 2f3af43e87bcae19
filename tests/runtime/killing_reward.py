"""A length reward that SIGKILLs its own process at the N-th call (``PLACERL_KILL_AT_CALL``),
so a test can kill a run at a chosen point of a step, with no chance to clean up."""

from __future__ import annotations

import os
import signal

from tests.conftest import length_reward

CALLS = [0]


def killing_length_reward(completions: list[str], **columns) -> list[float]:
    CALLS[0] += 1
    if str(CALLS[0]) == os.environ.get("PLACERL_KILL_AT_CALL"):
        os.kill(os.getpid(), signal.SIGKILL)
    return length_reward(completions, **columns)
