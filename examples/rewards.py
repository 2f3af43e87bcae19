"""An example rule reward for ``reward.function: examples.rewards:digits_match``.

Signature: ``fn(completions, prompts, **columns) -> list[float]``; ``columns`` holds the other
columns of the prompt dataset (here ``answer``), aligned with ``completions``.
"""


def digits_match(completions: list[str], prompts: list[str], answer: list[str], **_) -> list[float]:
    """Partial credit: the share of answer digits in the right place, 1.0 for an exact match."""
    scores = []
    for completion, target in zip(completions, answer):
        got = completion.strip()
        if got == target:
            scores.append(1.0)
            continue
        same = sum(a == b for a, b in zip(got, target))
        scores.append(0.5 * same / max(len(target), len(got), 1))
    return scores
