"""Rule rewards for the built-in tasks (usable on any dataset with an ``answer`` column)."""

from __future__ import annotations


def exact_match_reward(completions: list[str], answer: list[str], **_: object) -> list[float]:
    """Rule reward: 1.0 when the completion is exactly the right number, else 0.0.

    Follows placerl's reward-function signature: ``fn(completions, **dataset_columns)`` returning
    one float per completion (extra columns such as ``prompts`` arrive as keyword arguments).
    """
    return [1.0 if c.strip() == str(ans).strip() else 0.0 for c, ans in zip(completions, answer)]
