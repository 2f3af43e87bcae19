"""Multi-digit addition: the built-in task with a verifiable answer.

Why addition: a tiny transformer can learn it in minutes on a CPU, correctness is checked by a
rule, and the classic mistake — forgetting to carry — gives a *systematic* error that noisy
demonstrations can teach. The SFT demonstrations drop every carry with probability
``carry_noise`` (default 0.5), so on problems that need a carry the SFT model is torn between
the right answer and the carry-less one: a mediocre policy that RL with a reward can fix.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

PROMPT_TEMPLATE = "{a}+{b}="


@dataclass(frozen=True)
class AdditionTask:
    """Problems ``a+b=`` with operands of ``min_digits``..``max_digits`` digits."""

    min_digits: int = 2
    max_digits: int = 2
    carry_noise: float = 0.5  # share of SFT demonstrations on carry problems that drop the carry

    def sample_problem(self, rng: random.Random) -> tuple[int, int]:
        def operand() -> int:
            digits = rng.randint(self.min_digits, self.max_digits)
            low = 0 if digits == 1 else 10 ** (digits - 1)
            return rng.randint(low, 10**digits - 1)

        return operand(), operand()

    def problems(self, n: int, seed: int) -> list[tuple[int, int]]:
        rng = random.Random(seed)
        return [self.sample_problem(rng) for _ in range(n)]

    def prompt_rows(self, n: int, seed: int) -> list[dict]:
        """Prompt dataset rows: ``prompt`` plus the ``answer`` the rule reward checks."""
        return [
            {"prompt": PROMPT_TEMPLATE.format(a=a, b=b), "answer": str(a + b)}
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
            rows.append({"prompt": PROMPT_TEMPLATE.format(a=a, b=b), "completion": str(answer)})
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
                    "chosen": str(a + b),
                    "rejected": str(plausible_mistake(a, b, rng)),
                }
            )
        return rows


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
    choices = [x for x in (d - 1, d + 1) if 0 <= x <= 9 and not (i == 0 and x == 0 and len(digits) > 1)]
    digits[i] = str(rng.choice(choices))
    return int("".join(digits))


_LEADING_NUMBER = re.compile(r"\s*(-?\d+)")


def parse_answer(completion: str) -> int | None:
    """The integer a completion starts with, or None."""
    match = _LEADING_NUMBER.match(completion)
    return int(match.group(1)) if match else None


def exact_match_reward(completions: list[str], answer: list[str], **_: object) -> list[float]:
    """Rule reward: 1.0 when the completion is exactly the right number, else 0.0.

    Follows placerl's reward-function signature: ``fn(completions, **dataset_columns)`` returning
    one float per completion (extra columns such as ``prompts`` arrive as keyword arguments).
    """
    return [1.0 if c.strip() == str(ans).strip() else 0.0 for c, ans in zip(completions, answer)]
