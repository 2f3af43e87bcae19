"""A rule reward that takes its time, so a test can kill a worker while a run is mid-step."""

from __future__ import annotations

import time

from tests.conftest import length_reward


def slow_length_reward(completions: list[str], **columns) -> list[float]:
    time.sleep(0.3)
    return length_reward(completions, **columns)
