"""Dealing a batch to data-parallel ranks and micro-batches (``data/balance.py``): every unit
once, every rank the same number of micro-batches, limits kept, order restored, deterministic;
and workload balancing beats contiguous shares on a length-skewed batch."""

from __future__ import annotations

import random

import pytest

from placerl.algos.offline import plan_step
from placerl.algos.sft import SFT_KIND
from placerl.data.balance import Unit, deal, max_rank_work, workload
from placerl.data.examples import SFTExample
from placerl.models.micro_batches import MicroBatching


def _random_case(rng: random.Random):
    rows = rng.choice([1, 2])  # an SFT example, or a preference pair
    units = []
    for _ in range(rng.randint(1, 13)):
        lengths = [rng.randint(1, 40) for _ in range(rows)]
        units.append(Unit(sum(lengths), rows, workload(lengths, 8)))
    spec = MicroBatching(rng.choice([None, 2, 3, 4]), rng.choice([None, 30, 60, 120]))
    return units, rng.randint(1, 4), spec


@pytest.mark.parametrize("balance", ["tokens", "none"])
def test_deal_properties_over_random_batches(balance):
    rng = random.Random(0)
    for _ in range(400):
        units, world, spec = _random_case(rng)
        shares = deal(units, world, spec, balance)
        assert len(shares) == world
        dealt = sorted(i for s in shares for i in s.units)
        assert dealt == list(range(len(units))), "every unit exactly once"
        assert len({len(s.parts) for s in shares}) == 1, "the same micro-batch count everywhere"
        for share in shares:
            assert share.units == sorted(share.units), "order restored"
            assert sorted(i for p in share.parts for i in p) == share.units
            for part in share.parts:
                assert part == sorted(part)
                if len(part) > 1:  # a unit over the limits goes alone
                    rows = sum(units[i].rows for i in part)
                    tokens = sum(units[i].tokens for i in part)
                    assert rows <= (spec.rows or rows) and tokens <= (spec.tokens or tokens)
        assert deal(units, world, spec, balance) == shares, "deterministic"


def test_balanced_ranks_carry_less_than_contiguous_ones_on_skewed_lengths():
    lengths = [200, 180, 150, 10, 8, 6, 5, 4]  # the long examples come first
    units = [Unit(t, 1, workload([t], 64)) for t in lengths]
    spec = MicroBatching(2, None)
    balanced = max_rank_work(units, deal(units, 2, spec, "tokens"))
    contiguous = max_rank_work(units, deal(units, 2, spec, "none"))
    assert balanced < 0.75 * contiguous


def test_plan_step_counts_the_whole_batch_denominator_on_every_rank():
    rng = random.Random(1)
    for _ in range(100):
        examples = [
            SFTExample([1] * rng.randint(1, 5), [2] * rng.randint(1, 9))
            for _ in range(rng.randint(1, 9))
        ]
        world = rng.randint(1, 3)
        shares = plan_step(SFT_KIND, examples, world, MicroBatching(2, None))
        total = sum(len(e.completion) for e in examples)
        assert all(s.total == total and s.scale == world for s in shares)
        # the ranks' weights of their completion tokens add up to the batch's (times scale)
        weighted = sum(
            s.weight(sum(len(s.examples[i].completion) for i in p)) for s in shares for p in s.parts
        )
        assert weighted == pytest.approx(world)
