"""Stop reasons from a right-padded batch: end token, stop string, budget (issue 21.8)."""

from __future__ import annotations

import random

import pytest
import torch

from placerl.rollout.stop_reasons import (
    END_TOKEN,
    LENGTH,
    STOP_STRING,
    reason_names,
    stop_metrics,
    stop_reasons,
)

END, PAD = 1, 0


class Letters:
    """A tokenizer stand-in: token t decodes to chr(ord('a') + t)."""

    def batch_decode(self, rows):
        return ["".join(chr(ord("a") + t) for t in row) for row in rows]


@pytest.mark.parametrize("seed", range(100))
def test_reasons_follow_the_last_token_the_text_and_the_length(seed):
    rnd = random.Random(seed)
    budget, rows, expected = 6, [], []
    for _ in range(rnd.randint(1, 8)):
        kind = rnd.choice(["end", "stop", "length"])
        body = [rnd.randint(3, 9) for _ in range(rnd.randint(0, budget - 2))]  # no 'zz' inside
        if kind == "end":
            row, code = body + [END], END_TOKEN
        elif kind == "stop":
            row, code = body + [25, 25], STOP_STRING  # "zz"
        else:
            row, code = [rnd.randint(3, 9) for _ in range(budget)], LENGTH
        rows.append(row)
        expected.append(code)
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    got = stop_reasons(ids, mask, [END], ("zz",), Letters())
    assert got.tolist() == expected
    shares = stop_metrics(got)
    assert shares["response/clipped_ratio"] == pytest.approx(expected.count(LENGTH) / len(rows))
    assert shares["response/end_token_ratio"] == pytest.approx(
        expected.count(END_TOKEN) / len(rows)
    )
    assert sum(shares.values()) == pytest.approx(1.0)
    names = reason_names(got)
    assert set(names) <= {"end_token", "stop_string", "length"}


def test_an_end_token_wins_and_an_empty_row_ran_out():
    ids = torch.tensor([[25, 25, END], [PAD, PAD, PAD]])
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    assert stop_reasons(ids, mask, [END], ("zz",), Letters()).tolist() == [END_TOKEN, LENGTH]
    assert stop_reasons(ids[:, :0], mask[:, :0], [END]).tolist() == [LENGTH, LENGTH]
