"""Multi-digit addition: the built-in task with a verifiable answer.

Why addition: a tiny transformer can learn it in minutes on a CPU, correctness is checked by a
rule, and the classic mistake — forgetting to carry — gives a *systematic* error that noisy
demonstrations can teach. The SFT demonstrations drop every carry with probability
``carry_noise`` (default 0.5), so on problems that need a carry the SFT model is torn between
the right answer and the carry-less one: a mediocre policy that RL with a reward can fix.

Answers are written least-significant digit first (``17+25=`` → ``24``, i.e. 42 reversed), as
in Lee et al. 2023, "Teaching Arithmetic to Small Transformers": each output digit then
depends only on digits already seen and one carry, which a 6M-parameter model learns in a
couple of CPU minutes; most-significant-first needs many times longer. ``reverse=False``
gives the usual order. The ``answer`` column always holds the expected completion text.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

PROMPT_TEMPLATE = "{a}+{b}="


@dataclass(frozen=True)
class AdditionTask:
    """Problems ``a+b=`` with operands of ``min_digits``..``max_digits`` digits."""

    min_digits: int = 2
    max_digits: int = 2
    carry_noise: float = 0.5  # share of SFT demonstrations on carry problems that drop the carry
    split: str = "train"  # "train" or "eval": disjoint sets of problems (held-out accuracy)
    reverse: bool = True  # write answers least-significant digit first

    def format(self, value: int) -> str:
        return str(value)[::-1] if self.reverse else str(value)

    def sample_problem(self, rng: random.Random) -> tuple[int, int]:
        def operand() -> int:
            digits = rng.randint(self.min_digits, self.max_digits)
            low = 0 if digits == 1 else 10 ** (digits - 1)
            return rng.randint(low, 10**digits - 1)

        return operand(), operand()

    def problems(self, n: int, seed: int) -> list[tuple[int, int]]:
        """``n`` problems of this split; a fixed tenth of all problems is held out for eval."""
        rng = random.Random(seed)
        out: list[tuple[int, int]] = []
        while len(out) < n:
            a, b = self.sample_problem(rng)
            if is_held_out(a, b) == (self.split == "eval"):
                out.append((a, b))
        return out

    def prompt_rows(self, n: int, seed: int) -> list[dict]:
        """Prompt dataset rows: ``prompt`` plus the ``answer`` the rule reward checks."""
        return [
            {"prompt": PROMPT_TEMPLATE.format(a=a, b=b), "answer": self.format(a + b)}
            for a, b in self.problems(n, seed)
        ]

    def sft_rows(self, n: int, seed: int) -> list[dict]:
        """Noisy demonstrations (``prompt``/``completion``): some drop their carries."""
        rng = random.Random(seed + 1)
        rows = []
        for a, b in self.problems(n, seed):
            wrong = carry_less_sum(a, b)
            noisy = wrong != a + b and rng.random() < self.carry_noise
            answer = wrong if noisy else a + b
            rows.append(
                {"prompt": PROMPT_TEMPLATE.format(a=a, b=b), "completion": self.format(answer)}
            )
        return rows

    def preference_rows(self, n: int, seed: int) -> list[dict]:
        """Labelled comparisons (``prompt``/``chosen``/``rejected``): the right sum wins.

        Rejected answers are the mistakes a policy makes here: a dropped carry when the problem
        has one, otherwise a sum with one digit off.
        """
        rng = random.Random(seed + 2)
        rows = []
        for a, b in self.problems(n, seed):
            rows.append(
                {
                    "prompt": PROMPT_TEMPLATE.format(a=a, b=b),
                    "chosen": self.format(a + b),
                    "rejected": self.format(plausible_mistake(a, b, rng)),
                }
            )
        return rows


def is_held_out(a: int, b: int) -> bool:
    """The eval split: a deterministic tenth of all problems, never seen in training."""
    return zlib.crc32(f"{a}+{b}".encode()) % 10 == 0


def carry_less_sum(a: int, b: int) -> int:
    """Digit-wise sum modulo 10, i.e. addition that forgets every carry."""
    result, place = 0, 1
    while a or b:
        result += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return result


def plausible_mistake(a: int, b: int, rng: random.Random) -> int:
    """A wrong answer of the kind a learner makes: forgotten carry, else one digit off by one."""
    wrong = carry_less_sum(a, b)
    if wrong != a + b and rng.random() < 0.7:
        return wrong
    digits = list(str(a + b))
    i = rng.randrange(len(digits))
    d = int(digits[i])
    choices = [
        x for x in (d - 1, d + 1) if 0 <= x <= 9 and not (i == 0 and x == 0 and len(digits) > 1)
    ]
    digits[i] = str(rng.choice(choices))
    return int("".join(digits))
