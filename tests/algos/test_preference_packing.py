"""The offline preference step: packed layouts, log-probs equal to unpacked ones, the update."""

from __future__ import annotations

import math

import pytest
import torch

from placerl.algos.dpo import (
    EncodedPair,
    OfflinePreference,
    choose_layout,
    layout_works,
    pack_pairs,
    sequence_sums,
)
from placerl.config.preference import PreferenceConfig
from placerl.config.schema import OptimConfig
from placerl.data.packing import LAYOUTS, pack
from placerl.models.loading import load_policy
from placerl.models.training import make_optimizer

PAIRS = [
    EncodedPair([1, 10, 11], [20, 21, 2], [22, 2]),
    EncodedPair([1, 12], [23, 24, 25, 26, 27, 28, 2], [27, 2]),
    EncodedPair([1, 13, 14, 15], [28, 2], [29, 30, 2]),
]


@pytest.fixture
def policy(tiny_model_dir):
    return load_policy(tiny_model_dir)


def test_packed_layout_first_fit_decreasing():
    # lengths 5, 3, 2: rows of width 5 → [seq 0] and [seq 1 | seq 2]
    groups = [([5, 6], [[7, 8, 9]]), ([5], [[6, 7]]), ([5], [[6]])]
    packed = pack(groups, pad_id=0, layout="packed")
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 5, 6]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    assert packed.attention_mask is None  # transformers reads the position restarts
    # targets after each prompt; the logits predicting token t sit at column t - 1
    assert packed.targets.tolist() == [7, 8, 9, 6, 7, 6]
    assert packed.sources.tolist() == [1, 2, 3, 5, 6, 8]
    assert packed.owners.tolist() == [0, 0, 0, 1, 1, 2]
    assert packed.lengths.tolist() == [3.0, 2.0, 1.0]
    assert packed.num_tokens == 10


def test_shared_layout_computes_each_prompt_once_and_keeps_responses_apart():
    # A: 2 + 3 + 1 = 6 tokens, B and C 3 each: rows [A] and [B | C]
    groups = [([5, 6], [[7, 8, 9], [10]]), ([4], [[3], [2]]), ([1], [[2], [3]])]
    packed = pack(groups, pad_id=0, layout="shared")
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 10], [4, 3, 2, 1, 2, 3]]
    # each response continues the prompt's positions
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 2], [0, 1, 1, 0, 1, 1]]
    assert packed.attention_mask[0].int().tolist() == [
        [1, 0, 0, 0, 0, 0],  # prompt: causal
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # first response: the prompt and itself
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 0, 0, 0, 1],  # second response: the prompt and itself, not the first
    ]
    # sequences response-major: first responses 0, 1, 2, second responses 3, 4, 5; a
    # response's first token is predicted at its prompt's last position
    assert packed.owners.tolist() == [0, 0, 0, 3, 1, 4, 2, 5]
    assert packed.targets.tolist() == [7, 8, 9, 10, 3, 2, 2, 3]
    assert packed.sources.tolist() == [1, 2, 3, 1, 6, 6, 9, 9]
    assert packed.lengths.tolist() == [3.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert packed.num_tokens == 12


def test_padding_gets_its_own_segment_or_runs_on():
    groups = [([5, 6], [[7, 8]]), ([5], [[6]])]
    packed = pack(groups, pad_id=0, layout="packed")
    assert packed.input_ids.tolist() == [[5, 6, 7, 8], [5, 6, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]
    plain = pack(groups, pad_id=0, layout="padded")  # right padding, positions run on
    assert plain.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    shared = pack(groups, pad_id=0, layout="shared")
    assert shared.attention_mask[1, 2:, 2:].int().tolist() == [[1, 0], [0, 1]]  # pads: self


def test_pairs_are_chosen_then_rejected():
    packed = pack_pairs(PAIRS, pad_id=0)
    assert packed.num_sequences == 6
    assert packed.lengths.tolist() == [3.0, 7.0, 2.0, 2.0, 2.0, 3.0]
    assert packed.num_tokens == 9 + 19  # each prompt once, all responses


def _alone(model, ids: list[int], prompt_len: int) -> float:
    """Σ log p of the response of one sequence, computed by the plain HF forward."""
    logits = model(torch.tensor([ids])).logits[0].float()
    log_probs = torch.log_softmax(logits, -1)
    return sum(float(log_probs[t - 1, ids[t]]) for t in range(prompt_len, len(ids)))


@pytest.mark.parametrize("layout", LAYOUTS)
@torch.no_grad()
def test_log_probs_in_every_layout_equal_each_sequence_alone(policy, layout):
    policy.eval()
    assert layout_works(policy, layout)
    pairs = [*PAIRS, EncodedPair([1], [5], [6])]  # short enough to share a row
    packed = pack_pairs(pairs, pad_id=0, layout=layout)
    items = {"shared": 4, "packed": 8, "padded": 8}[layout]
    assert (packed.input_ids.shape[0] < items) == (layout != "padded")  # rows are shared
    seqs = [(p.prompt + p.chosen, len(p.prompt)) for p in pairs]
    seqs += [(p.prompt + p.rejected, len(p.prompt)) for p in pairs]
    expected = torch.tensor([_alone(policy, ids, n) for ids, n in seqs])
    torch.testing.assert_close(sequence_sums(policy, packed), expected, rtol=1e-5, atol=1e-5)


class _AttendsAcrossSequences(torch.nn.Module):
    """A model that ignores packing: an all-ones mask lets sequences see each other."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, position_ids, use_cache, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))


def test_layout_check_catches_a_model_that_mixes_sequences(policy):
    assert choose_layout(policy) == "shared"
    careless = _AttendsAcrossSequences(policy)
    assert not layout_works(careless, "shared") and not layout_works(careless, "packed")
    assert choose_layout(policy, careless) == "padded"


def _algo(model, layout: str, **pref) -> OfflinePreference:
    optim = OptimConfig(lr=1e-2)
    optimizer, scheduler = make_optimizer(model.parameters(), optim, total_steps=10)
    return OfflinePreference(
        model,
        optimizer,
        scheduler,
        PreferenceConfig(**pref),
        grad_clip=1.0,
        precision="fp32",
        pad_id=0,
        layout=layout,
    )


def test_step_from_the_reference_starts_at_log2_and_changes_weights(policy):
    algo = _algo(policy, "shared")
    reference = algo.reference_log_probs(policy, PAIRS)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = algo.step(PAIRS, reference)
    assert metrics["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)
    assert metrics["rewards/margin"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["throughput/tokens"] == 9 + 19  # prompts once + responses
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    second = algo.step(PAIRS, reference)  # the same pairs again: now preferred more
    assert second["rewards/margin"] > 0
    assert second["loss/dpo"] < math.log(2)


def test_packed_and_padded_batches_train_alike(tiny_model_dir):
    """Batch layout is an implementation detail: the trajectory must not depend on it."""
    runs = []
    for layout in ("shared", "padded"):
        model = load_policy(tiny_model_dir)
        algo = _algo(model, layout, loss="slic", margin=2.0, sft_coef=0.5)
        reference = algo.reference_log_probs(model, PAIRS)
        losses = [algo.step(PAIRS, reference)["loss/slic"] for _ in range(3)]
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-4)
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_ipo_and_sft_term_use_per_token_means(policy):
    algo = _algo(policy, "shared", loss="ipo", beta=0.5, sft_coef=0.1)
    policy_sums = torch.tensor([[-6.0, -2.0]])
    reference = torch.tensor([[-9.0, -1.0]])
    lengths = torch.tensor([[3.0, 2.0]])
    loss, stats = algo.loss(policy_sums, reference, lengths)
    # means: π (-2, -1), ref (-3, -0.5) → Δ = (1) - (-0.5) = 1.5; (1.5 - 1)² = 0.25
    # SFT: 0.1 · NLL per token of chosen = 0.1 · 2
    assert loss.item() == pytest.approx(0.25 + 0.2)
    assert stats["margin"].item() == pytest.approx(0.5 * 1.5)
