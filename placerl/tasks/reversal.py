"""Digit reversal with a biased demonstrator: the default built-in task.

``rev 52814=`` → ``41825``. Reversal needs learning (each output digit must find its mirror
position), yet a 6M-parameter model learns it in about a hundred CPU steps — unlike
multi-digit addition, which we measured still at its loss plateau after 250 steps (see
README). The SFT demonstrations come from a *biased* demonstrator: when the first digit is
odd, it copies the digits instead of reversing them with probability ``noise`` (default 0.8).
The SFT model learns the bias — right on even-first prompts, mostly wrong on odd-first ones —
which is the mediocre policy a reward then fixes: a reward model trained on comparisons
learns that reversal wins, and RL moves the policy there.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

PROMPT_TEMPLATE = "rev {digits}="


def is_held_out(digits: str) -> bool:
    """The eval split: a deterministic tenth of all digit strings, never seen in training."""
    return zlib.crc32(digits.encode()) % 10 == 0


@dataclass(frozen=True)
class ReversalTask:
    length: int = 5
    noise: float = 0.8  # P(copy instead of reverse | first digit odd) for the demonstrator
    split: str = "train"  # "train" or "eval": disjoint sets of digit strings

    def strings(self, n: int, seed: int) -> list[str]:
        rng = random.Random(seed)
        out: list[str] = []
        while len(out) < n:
            digits = "".join(rng.choice("0123456789") for _ in range(self.length))
            if is_held_out(digits) == (self.split == "eval"):
                out.append(digits)
        return out

    def prompt_rows(self, n: int, seed: int) -> list[dict]:
        return [
            {"prompt": PROMPT_TEMPLATE.format(digits=d), "answer": d[::-1]}
            for d in self.strings(n, seed)
        ]

    def sft_rows(self, n: int, seed: int) -> list[dict]:
        rng = random.Random(seed + 1)
        rows = []
        for d in self.strings(n, seed):
            biased = int(d[0]) % 2 == 1 and rng.random() < self.noise
            rows.append(
                {"prompt": PROMPT_TEMPLATE.format(digits=d), "completion": d if biased else d[::-1]}
            )
        return rows

    def preference_rows(self, n: int, seed: int) -> list[dict]:
        """Chosen: the reversal. Rejected: half the time the copy, half the time (and always
        when the copy equals the reversal) the reversal with one digit changed — near misses
        teach the reward model to check every digit, which keeps RL from exploiting it."""
        rng = random.Random(seed + 2)
        rows = []
        for d in self.strings(n, seed):
            right = d[::-1]
            wrong = d
            if wrong == right or rng.random() < 0.5:
                i = rng.randrange(len(right))
                wrong = (
                    right[:i]
                    + rng.choice([c for c in "0123456789" if c != right[i]])
                    + right[i + 1 :]
                )
            rows.append(
                {"prompt": PROMPT_TEMPLATE.format(digits=d), "chosen": right, "rejected": wrong}
            )
        return rows
