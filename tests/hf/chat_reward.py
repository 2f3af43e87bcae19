"""A reward function for chat-format prompts that records what it was called with."""

from __future__ import annotations

CALLS: list[dict] = []


def reversal_reward(completions: list[str], prompts: list, answer: list[str], **_) -> list[float]:
    """The fraction of digits in the right place (signal for a barely trained model); records
    the call, to check that ``prompts`` are the chat messages (as TRL passes them)."""
    CALLS.append({"prompts": prompts, "completions": completions})
    return [
        sum(x == y for x, y in zip(c.strip(), a)) / len(a)
        for c, a in zip(completions, answer, strict=True)
    ]
