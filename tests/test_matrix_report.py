"""The alignment matrix's statistics (benchmarks/matrix_report.py) against hand numbers: the
95% t-interval over seeds and the paired-difference verdict of a paper's claim."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from matrix_report import claims, examples, interval, markdown, summarise  # noqa: E402


def test_interval_by_hand():
    # mean 2, unbiased sd 1, t(0.975, 2) = 4.303: half-width 4.303 / √3
    mean, low, high = interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert interval([0.5, 0.5]) == (0.5, 0.5, 0.5)


def _cells(online: list[float], dpo: list[float]) -> list[dict]:
    rows = []
    for seed, (a, b) in enumerate(zip(online, dpo, strict=True)):
        rows.append({"method": "online_dpo", "seed": seed, "accuracy": a})
        rows.append({"method": "dpo", "seed": seed, "accuracy": b})
    return rows


@pytest.mark.parametrize(
    "online, dpo, verdict",
    [
        ([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], "reproduces"),  # +0.1 each seed: sd 0
        ([0.4, 0.5, 0.6], [0.5, 0.6, 0.7], "reversed"),
        ([0.5, 0.4, 0.7], [0.4, 0.5, 0.6], "not resolved"),  # +0.1, −0.1, +0.1
    ],
)
def test_a_claim_is_judged_on_paired_differences(online, dpo, verdict):
    (found,) = [c for c in claims(_cells(online, dpo)) if c["paper"] == "2405.08448"]
    assert found["verdict"] == verdict
    assert found["diffs"] == pytest.approx([a - b for a, b in zip(online, dpo)])


def test_summary_and_markdown_rows():
    cells = [
        {"method": "grpo", "seed": s, "accuracy": a, "kl": k, "seconds": 10, "samples": 640}
        for s, (a, k) in enumerate([(0.2, 1.0), (0.4, 3.0)])
    ]
    (row,) = summarise(cells)
    assert row["accuracy"][0] == pytest.approx(0.3) and row["kl"][0] == pytest.approx(2.0)
    # t(0.975, 1) = 12.706, sd 0.1414, √2: half-width 1.2706
    assert row["accuracy"][2] - row["accuracy"][0] == pytest.approx(
        12.706 * 0.1 * math.sqrt(2) / math.sqrt(2)
    )
    assert "| grpo | 0.300 [" in markdown([row], [])


def test_examples_table_before_after_and_dapo_rounds():
    cells = [{"method": "sft", "seed": s, "accuracy": 0.5, "kl": 0.0} for s in (0, 1)]
    cells += [
        {"method": "dapo", "seed": s, "accuracy": a, "steps": 20, "seconds": t, "rounds": r}
        | {"filtered_share": f}
        for s, a, t, r, f in [(1, 0.7, 30.0, 3.0, 0.75), (0, 0.6, 10.0, 2.0, 0.5)]
    ]
    cells.append({"method": "gspo", "seed": 0, "accuracy": 0.55, "steps": 20, "seconds": 4.0})
    table = examples(cells, ("gspo", "dapo", "cispo")).splitlines()
    half = 12.706 * math.sqrt(0.005) / math.sqrt(2)  # sd of (0.6, 0.7), t(0.975, 1)
    assert table[2] == "| gspo | 0.500 | 0.550 [0.550, 0.550] | 0.550 | 20 | 4 |"
    assert table[3] == (
        f"| dapo | 0.500 | 0.650 [{0.65 - half:.3f}, {0.65 + half:.3f}] | 0.600, 0.700 | 20 | 20 |"
    )
    assert not any(line.startswith("| cispo") for line in table)  # no cells, no row
    assert table[-2:] == ["| 0 | 2.00 | 0.500 |", "| 1 | 3.00 | 0.750 |"]


def test_only_seed_must_be_one_of_the_seeds(capsys):
    from alignment_matrix import parse_args

    assert parse_args(["--seeds", "3", "--only-seed", "2"]).only_seed == 2
    assert parse_args(["--seeds", "3"]).only_seed is None  # the whole matrix, then the table
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--seeds", "3", "--only-seed", "3"])
    assert exit_.value.code == 2 and "--only-seed 3: seeds are 0..2" in capsys.readouterr().err
