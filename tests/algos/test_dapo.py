"""DAPO's overlong reward shaping and overlong filtering against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

from placerl.algos import dapo


def test_overlong_penalty_band_hand_values():
    # L_max = 10, L_cache = 4: the band starts after 10 − 4 = 6 tokens
    lengths = torch.tensor([3, 6, 7, 8, 10, 12])
    penalty = dapo.overlong_penalty(lengths, max_length=10, cache_length=4)
    # 3, 6 -> 0;  7 -> (6 − 7) / 4 = −0.25;  8 -> −0.5;  10 -> (6 − 10) / 4 = −1;  12 > L_max -> −1
    assert penalty.tolist() == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    assert penalty.dtype == torch.float32


def test_a_truncated_response_gets_the_full_penalty_and_the_factor_scales_it():
    lengths = torch.tensor([5, 7, 9])
    cut = torch.tensor([True, False, False])  # cut early (e.g. a stop rule): true length > L_max
    penalty = dapo.overlong_penalty(lengths, 10, 4, truncated=cut, penalty_factor=0.5)
    # −1, −0.25, (6 − 9) / 4 = −0.75; each × 0.5
    assert penalty.tolist() == [-0.5, -0.125, -0.375]


def test_overlong_penalty_paper_defaults():
    lengths = torch.tensor([16384, 18432, 20480])
    penalty = dapo.overlong_penalty(lengths, dapo.DAPO_MAX_LENGTH, dapo.DAPO_CACHE_LENGTH)
    # band (16384, 20480]: 16384 -> 0; 18432 -> −2048 / 4096 = −0.5; 20480 -> −1
    assert penalty.tolist() == [0.0, -0.5, -1.0]


@pytest.mark.parametrize("cache", [0, 11])
def test_overlong_cache_must_lie_inside_the_budget(cache):
    with pytest.raises(ValueError, match="cache_length"):
        dapo.overlong_penalty(torch.tensor([1]), max_length=10, cache_length=cache)


def test_truncated_rows_are_those_not_ending_with_an_end_token():
    ids = torch.tensor([[5, 2, 0], [5, 6, 7], [2, 0, 0], [0, 0, 0], [5, 9, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    # row 0 ends with 2 (end); row 1 used the budget; row 2 is the end token alone;
    # row 3 is empty (nothing finished); row 4 ends with 9, an end token only in the 2nd call
    assert dapo.truncated_rows(ids, mask, 2).tolist() == [False, True, False, True, True]
    assert dapo.truncated_rows(ids, mask, [2, 9]).tolist() == [False, True, False, True, False]
    assert dapo.response_lengths(mask).tolist() == [2, 3, 1, 0, 2]


def test_overlong_loss_mask_zeroes_truncated_rows_only():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    kept = dapo.overlong_loss_mask(mask, torch.tensor([False, True]))
    assert kept.tolist() == [[1, 1, 0], [0, 0, 0]]
    assert kept.dtype == mask.dtype
