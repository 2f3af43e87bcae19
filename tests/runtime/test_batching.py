"""Splitting work over data-parallel workers changes nothing: sampling, gathering and the loss
come out as if one process had the whole batch (no Ray, no processes: the pieces alone)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from placerl.algos import core
from placerl.data.collate import left_pad
from placerl.rollout.sampling import SamplingParams, draw_uniforms, generate
from placerl.runtime.ray.batching import cat_results, owned_rows, shard_rows, take_rows
from placerl.runtime.ray.data_parallel import combine_update_stats, loss_denominator
from placerl.types import Field

PAD = 0
PROMPTS = [[5, 9, 3, 17, 2], [11, 4], [8, 30, 21], [7], [12, 13, 14, 15]]


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def sample(model, ids, mask, params, uniforms=None, generator=None):
    eos = list(range(1, 9))  # a fifth of the vocabulary: rows end at different steps
    return generate(
        model,
        ids,
        mask,
        params,
        eos_token_id=eos,
        pad_token_id=PAD,
        generator=generator,
        uniforms=uniforms,
    )


@pytest.mark.parametrize("workers", [2, 3])
def test_sampling_a_batch_in_row_shards_equals_sampling_it_whole(workers):
    model, params = tiny_model(), SamplingParams(max_new_tokens=10, temperature=0.9)
    ids, mask = left_pad(PROMPTS, PAD)
    whole = sample(model, ids, mask, params, generator=torch.Generator().manual_seed(4))
    assert len(set(whole[Field.RESPONSE_MASK].sum(-1).tolist())) > 1, "lengths should vary"

    noise = draw_uniforms(len(PROMPTS), params, torch.Generator().manual_seed(4))
    parts = []
    for rows in shard_rows(len(PROMPTS), workers):
        part_ids, part_mask, part_noise = (take_rows(t, rows) for t in (ids, mask, noise))
        parts.append(sample(model, part_ids, part_mask, params, uniforms=part_noise))
    widths = {p[Field.RESPONSE_IDS].shape[1] for p in parts}
    assert len(widths) > 1, "scenario: each part is trimmed to its own longest row"
    gathered = cat_results(parts, owned_rows(len(PROMPTS), workers), PAD)

    for key in (Field.RESPONSE_IDS, Field.RESPONSE_MASK, Field.INPUT_IDS, Field.ATTENTION_MASK):
        assert torch.equal(gathered[key], whole[key]), key
    torch.testing.assert_close(
        gathered[Field.OLD_LOG_PROBS], whole[Field.OLD_LOG_PROBS], atol=1e-6, rtol=0
    )


def test_more_workers_than_rows_repeat_a_row_whose_result_is_dropped():
    rows = shard_rows(1, 3)
    assert [r.tolist() for r in rows] == [[0], [0], [0]]
    assert owned_rows(1, 3) == [0, 0, 1]  # the last rank owns it; the others only pad
    results = [torch.tensor([9.0]), torch.tensor([9.0]), torch.tensor([1.0])]
    assert cat_results(results, owned_rows(1, 3)).tolist() == [1.0]


def test_rows_of_lists_and_dataset_columns_follow_the_tensor_rows():
    rows = torch.tensor([2, 0])
    assert take_rows(["a", "b", "c"], rows) == ["c", "a"]
    assert take_rows({"answer": [1, 2, 3]}, rows) == {"answer": [3, 1]}


@pytest.mark.parametrize("mode", core.AGG_MODES)
@pytest.mark.parametrize("workers", [2, 3])
def test_weighted_worker_losses_average_to_the_global_loss(mode, workers):
    """What ShardedUpdate does: rank r's loss times W·n_r/n, averaged over ranks as the
    gradient all-reduce does, is the loss of the whole minibatch — with unequal lengths and a
    row with no valid token."""
    torch.manual_seed(0)
    loss_mat = torch.randn(7, 6)
    lengths = torch.tensor([6, 1, 0, 4, 2, 6, 3])
    mask = (torch.arange(6) < lengths[:, None]).long()
    global_loss = core.aggregate_loss(loss_mat, mask, mode)
    total = loss_denominator(mask, mode)
    averaged = torch.zeros(())
    for rows in shard_rows(7, workers):
        mine = loss_denominator(mask[rows], mode)
        local = core.aggregate_loss(loss_mat[rows], mask[rows], mode)
        averaged += workers * mine / total * local / workers
    torch.testing.assert_close(averaged, global_loss, atol=1e-6, rtol=1e-6)


def test_update_stats_are_summed_except_the_replicated_ones():
    ranks = [
        {"loss/policy": 0.25, "actor/grad_norm": 2.0, "actor/lr": 0.1},
        {"loss/policy": 0.5, "actor/grad_norm": 2.0, "actor/lr": 0.1, "actor/skipped": 0.5},
    ]
    assert combine_update_stats(ranks) == {
        "loss/policy": 0.75,
        "actor/grad_norm": 2.0,
        "actor/lr": 0.1,
        "actor/skipped": 0.5,
    }


def test_a_shuffled_minibatch_is_cut_into_shares_of_whole_groups():
    """16 prompts × 4 samples, shuffled, over 2 ranks: each rank's share holds 8 prompts (so
    its shared-prefix forward computes 8 prompts, not ~15), and no row is lost or repeated."""
    from tensordict import TensorDict

    from placerl.runtime.ray.batching import shard_slices
    from placerl.runtime.ray.data_parallel import rows_by_prompt

    prompts = [[p + 1, p + 2] for p in range(16)]
    ids, mask = left_pad([p for p in prompts for _ in range(4)], PAD)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    mb = TensorDict(
        {Field.PROMPT_IDS: ids[order], Field.PROMPT_MASK: mask[order], "row": order},
        batch_size=[64],
    )
    grouped = rows_by_prompt(mb)
    assert sorted(grouped["row"].tolist()) == list(range(64))
    for part in shard_slices(64, 2):
        share = grouped[part]
        assert len(torch.unique(share[Field.PROMPT_IDS], dim=0)) == 8
    plain = mb[shard_slices(64, 2)[0]]
    assert len(torch.unique(plain[Field.PROMPT_IDS], dim=0)) > 8, "the shuffle mixes groups"
