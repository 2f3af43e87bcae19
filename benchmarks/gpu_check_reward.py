"""The GPU check's reward, in a module of its own: Ray workers import it by name
(``benchmarks.gpu_check_reward:distinct_characters``) and need nothing else of the check."""

from __future__ import annotations


def distinct_characters(completions: list[str], **_) -> list[float]:
    """A reward with signal for a random model (its responses never end early, all tie on
    length): the number of distinct characters."""
    return [float(len(set(c))) for c in completions]
