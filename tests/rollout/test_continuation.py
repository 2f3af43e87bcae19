"""Specification of multi-turn continuation: a sequence continued from its kept KV cache after
appended tokens samples exactly what a fresh prefill of its whole sequence samples, and the
model is fed only the new tokens."""

from __future__ import annotations

import pytest
import torch

from placerl.data.collate import left_pad
from placerl.rollout.continuation import TurnRequest, generate_turns
from placerl.rollout.sampling import SamplingParams, generate
from tests.rollout.test_sampling import PAD, VOCAB, tiny_gpt2, tiny_model

ENDS = list(range(26, 40))  # a third of the vocabulary ends a turn: turns end early
PROMPTS = [(5, 9, 3, 17, 2), (11, 4), (8, 22, 21, 7, 7, 1, 3)]
BRIDGES = [(12, 13), (14,), (15, 16, 17, 18)]


def turns(model, requests, greedy=True, reuse=True, max_new=6):
    params = SamplingParams(max_new_tokens=max_new, greedy=greedy)
    return generate_turns(
        model, requests, params, eos_token_id=ENDS, pad_token_id=PAD, reuse_cache=reuse
    )


def noise(seed: int, rows: int, width: int = 12) -> torch.Tensor:
    return torch.rand((rows, width), generator=torch.Generator().manual_seed(seed))


def first_turns(model, greedy=True):
    u = noise(0, len(PROMPTS))
    requests = [TurnRequest(p, None, 12, None if greedy else u[i]) for i, p in enumerate(PROMPTS)]
    return turns(model, requests, greedy)


def second_requests(first, greedy=True):
    u = noise(1, len(first))
    return [
        TurnRequest(b, r.context, 6, None if greedy else u[i])
        for i, (r, b) in enumerate(zip(first, BRIDGES))
    ]


def make(arch: str):
    """Llama (rotary) or GPT-2 (learned absolute positions: a wrong position id shows)."""
    return tiny_model(seed=3) if arch == "llama" else tiny_gpt2(seed=3)


def ended_first_turns(model, greedy):
    first = first_turns(model, greedy)
    assert all(r.ended for r in first), "every first turn ends on an end token (seeded)"
    return first


# greedy GPT-2 repeats one token forever at this seed: it is checked sampling only
@pytest.mark.parametrize(("arch", "greedy"), [("llama", True), ("llama", False), ("gpt2", False)])
def test_a_continued_turn_equals_a_fresh_prefill_of_the_whole_sequence(arch, greedy):
    model = make(arch)
    first = ended_first_turns(model, greedy)
    cached = turns(model, second_requests(first, greedy), greedy, reuse=True)
    recomputed = turns(model, second_requests(first, greedy), greedy, reuse=False)
    for a, b in zip(cached, recomputed):
        assert a.ids == b.ids
        torch.testing.assert_close(torch.tensor(a.log_probs), torch.tensor(b.log_probs))
    # ... and what single-turn sampling gives with the whole sequence as its prompt
    whole = [r.context.ids + b for r, b in zip(first, BRIDGES)]
    ids, mask = left_pad(whole, PAD)
    u = noise(1, len(first))
    params = SamplingParams(max_new_tokens=6, greedy=greedy)
    batch = generate(
        model,
        ids,
        mask,
        params,
        eos_token_id=ENDS,
        pad_token_id=PAD,
        uniforms=None if greedy else u,
    )
    for row, turn in enumerate(cached):
        n = len(turn.ids)
        assert batch["response_ids"][row, :n].tolist() == list(turn.ids)
        assert int(batch["response_mask"][row].sum()) == n


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_context_holds_every_token_and_its_cache_all_but_the_last(arch):
    model = make(arch)
    first = ended_first_turns(model, greedy=False)
    for prompt, turn in zip(PROMPTS, first):
        assert turn.context.ids == prompt + turn.ids
        assert turn.context.cache.length == len(turn.context.ids) - 1
    second = turns(model, second_requests(first, greedy=False), greedy=False)
    for r1, bridge, r2 in zip(first, BRIDGES, second):
        if r2.context is not None:
            assert r2.context.ids == r1.context.ids + bridge + r2.ids


def test_a_continued_turn_feeds_the_model_only_the_new_tokens():
    model = tiny_model(seed=3)
    first = ended_first_turns(model, greedy=True)
    widths: list[int] = []
    forward = model.forward

    def counting(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    model.forward = counting
    turns(model, second_requests(first))
    longest_new = max(len(b) + 1 for b in BRIDGES)  # the pending end token + the bridge
    assert widths[0] == longest_new
    assert all(w == 1 for w in widths[1:])


def test_fresh_and_continued_rows_share_a_call_as_if_each_ran_alone():
    model = tiny_model(seed=3)
    first = ended_first_turns(model, greedy=True)
    fresh = TurnRequest((6, 6, 2, 9), None, 6)
    mixed = turns(model, [*second_requests(first), fresh])
    alone = [turns(model, [r])[0] for r in [*second_requests(first), fresh]]
    for a, b in zip(mixed, alone):
        assert a.ids == b.ids
        torch.testing.assert_close(torch.tensor(a.log_probs), torch.tensor(b.log_probs))


def test_a_row_stops_at_its_own_limit_and_is_not_kept():
    model = tiny_model(seed=3)
    requests = [TurnRequest(p, None, n) for p, n in zip(PROMPTS, (1, 2, 3))]
    out = generate_turns(
        model,
        requests,
        SamplingParams(max_new_tokens=1, greedy=True),
        eos_token_id=[VOCAB + 1],  # never sampled: every row runs to its own limit
        pad_token_id=PAD,
    )
    assert [len(r.ids) for r in out] == [1, 2, 3]
    assert not any(r.ended for r in out)
    assert all(r.context is None for r in out)


def test_keep_false_drops_the_cache():
    model = tiny_model(seed=3)
    requests = [TurnRequest(p, None, 6, keep=False) for p in PROMPTS]
    assert all(r.context is None for r in turns(model, requests))


def test_rows_taken_out_of_a_cache_and_stacked_back_keep_their_real_positions():
    """Random rows of random lengths, left-padded with holes: taking them out keeps exactly
    their real positions in order; stacking them back left-pads them again."""
    from transformers import DynamicCache

    from placerl.models.kv_cache import stack_rows, take_rows

    rng = torch.Generator().manual_seed(0)
    for _ in range(50):
        rows, width, layers = int(torch.randint(1, 5, (1,))), int(torch.randint(1, 9, (1,))), 2
        mask = (torch.rand((rows, width), generator=rng) < 0.7).long()
        mask[:, -1] = 1  # every row has a real last position
        cache = DynamicCache()
        kv = [torch.randn((rows, 2, width, 3), generator=rng) for _ in range(2 * layers)]
        for layer in range(layers):
            cache.update(kv[2 * layer], kv[2 * layer + 1], layer)
        taken = take_rows(cache, torch.arange(rows), mask)
        for row, r in enumerate(taken):
            real = mask[row].bool()
            assert r.length == int(real.sum())
            for layer in range(layers):
                assert torch.equal(r.keys[layer], kv[2 * layer][row][:, real])
                assert torch.equal(r.values[layer], kv[2 * layer + 1][row][:, real])
        stacked, stacked_mask = stack_rows([*taken, None], config=None)
        longest = max(r.length for r in taken)
        assert stacked_mask.shape == (rows + 1, longest) and stacked_mask[-1].sum() == 0
        again = take_rows(stacked, torch.arange(rows), stacked_mask)
        for a, b in zip(taken, again):
            assert all(torch.equal(x, y) for x, y in zip(a.keys + a.values, b.keys + b.values))
