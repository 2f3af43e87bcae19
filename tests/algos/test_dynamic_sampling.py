"""DAPO's dynamic sampling filter and the accumulator of groups with signal."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from placerl.algos.dynamic_sampling import SignalGroups, concat_batches, groups_with_signal
from placerl.types import Field

PAD = 9


def sampled(scores, prompt_width, response_width, tag):
    """A scored batch in the [prompt | response] layout: prompt tokens are the tag, response
    tokens 100 + tag, every row's prompt and response use their whole widths but the last
    response token of odd rows (right padding)."""
    b = len(scores)
    response_mask = torch.ones(b, response_width, dtype=torch.long)
    response_mask[1::2, -1] = 0
    response = torch.where(response_mask.bool(), 100 + tag, PAD)
    prompt = torch.full((b, prompt_width), tag)
    prompt_mask = torch.ones(b, prompt_width, dtype=torch.long)
    return TensorDict(
        {
            Field.PROMPT_IDS: prompt,
            Field.PROMPT_MASK: prompt_mask,
            Field.RESPONSE_IDS: response,
            Field.RESPONSE_MASK: response_mask,
            Field.INPUT_IDS: torch.cat([prompt, response], 1),
            Field.ATTENTION_MASK: torch.cat([prompt_mask, response_mask], 1),
            Field.OLD_LOG_PROBS: -response_mask.float(),
            Field.SCORES: torch.tensor(scores, dtype=torch.float32),
        },
        batch_size=[b],
    )


def test_groups_with_signal_hand_values():
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.7, 0.7, 0.2, 0.7])
    assert groups_with_signal(scores, 2).tolist() == [True, False, False, False, True]
    assert groups_with_signal(torch.tensor([0.5, 0.5, float("nan"), 1.0]), 2).tolist() == [
        False,
        False,  # a NaN compares false: no signal, dropped
    ]
    with pytest.raises(ValueError, match="group_size"):
        groups_with_signal(scores, 3)


def test_accumulator_keeps_groups_with_signal_over_rounds():
    acc = SignalGroups(target_groups=3, group_size=2, max_rounds=3, pad_token_id=PAD)
    acc.add(sampled([1, 0, 1, 1, 0, 0], prompt_width=2, response_width=3, tag=1))
    # round 1: groups [1, 0] (signal), [1, 1], [0, 0] -> 1 kept, 2 missing
    assert (acc.kept_groups, acc.missing_groups, acc.done) == (1, 2, False)
    acc.add(sampled([0, 1, 0.5, 0.5], prompt_width=3, response_width=2, tag=2))
    # round 2: [0, 1] (signal), [0.5, 0.5] -> 2 kept, 1 missing
    assert (acc.kept_groups, acc.missing_groups, acc.done) == (2, 1, False)
    acc.add(sampled([1, 0, 0, 1, 1, 1], prompt_width=1, response_width=4, tag=3))
    # round 3: [1, 0] and [0, 1] have signal, only 1 is missing: the first is kept, 1 surplus
    assert acc.done and acc.kept_groups == 3
    batch = acc.batch()
    assert batch.batch_size[0] == 6
    assert batch[Field.SCORES].tolist() == [1, 0, 0, 1, 1, 0]
    assert batch[Field.PROMPT_IDS][:, -1].tolist() == [1, 1, 2, 2, 3, 3]  # arrival order
    # sampled 3 + 2 + 3 = 8 groups, 4 with signal: filtered share 4 / 8
    assert acc.stats() == {
        "dynamic_sampling/rounds": 3.0,
        "dynamic_sampling/filtered_share": 0.5,
        "dynamic_sampling/kept_groups": 3.0,
        "dynamic_sampling/surplus_groups": 1.0,
        "dynamic_sampling/complete": 1.0,
    }
    with pytest.raises(ValueError, match="done"):
        acc.add(sampled([1, 0], 1, 1, tag=4))


def test_accumulator_stops_at_the_round_cap_with_what_it_has():
    acc = SignalGroups(target_groups=4, group_size=2, max_rounds=2)
    acc.add(sampled([1, 1, 0, 1], 2, 2, tag=1))  # 1 group with signal of 2
    acc.add(sampled([0, 0, 0, 0], 2, 2, tag=2))  # none of 2
    assert acc.done and acc.missing_groups == 3
    assert acc.batch()[Field.SCORES].tolist() == [0, 1]
    stats = acc.stats()
    assert stats["dynamic_sampling/complete"] == 0.0
    assert stats["dynamic_sampling/filtered_share"] == 0.75  # 3 of 4 groups had no signal


def test_accumulator_arguments_are_checked():
    with pytest.raises(ValueError, match="group_size=1"):
        SignalGroups(target_groups=2, group_size=1, max_rounds=1)
    with pytest.raises(ValueError, match="max_rounds=0"):
        SignalGroups(target_groups=2, group_size=2, max_rounds=0)
    with pytest.raises(ValueError, match="add"):
        SignalGroups(target_groups=2, group_size=2, max_rounds=1).batch()


def test_concat_batches_repads_prompts_left_and_responses_right():
    a = sampled([1.0, 0.0], prompt_width=2, response_width=3, tag=1)
    b = sampled([0.5], prompt_width=3, response_width=1, tag=2)
    joined = concat_batches([a, b], pad_token_id=PAD)
    # widths: prompt max(2, 3) = 3, response max(3, 1) = 3
    assert joined[Field.PROMPT_IDS].tolist() == [[PAD, 1, 1], [PAD, 1, 1], [2, 2, 2]]
    assert joined[Field.PROMPT_MASK].tolist() == [[0, 1, 1], [0, 1, 1], [1, 1, 1]]
    assert joined[Field.RESPONSE_IDS].tolist() == [[101] * 3, [101, 101, PAD], [102, PAD, PAD]]
    assert joined[Field.RESPONSE_MASK].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert joined[Field.INPUT_IDS].tolist() == [
        [PAD, 1, 1, 101, 101, 101],
        [PAD, 1, 1, 101, 101, PAD],
        [2, 2, 2, 102, PAD, PAD],
    ]
    assert joined[Field.ATTENTION_MASK].tolist() == [
        [0, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0, 0],
    ]
    assert joined[Field.OLD_LOG_PROBS].tolist() == [[-1, -1, -1], [-1, -1, 0], [-1, 0, 0]]
    assert joined[Field.SCORES].tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="different fields"):
        concat_batches([a, b.exclude(Field.SCORES)])
