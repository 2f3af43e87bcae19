"""Specification of batched sampling: what ``generate`` returns, row by row, on tiny models."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders
from tokenizers.models import WordLevel
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from placerl.data.collate import left_pad
from placerl.models.logprobs import log_probs_from_logits
from placerl.rollout.sampling import SamplingParams, generate, sample_next
from placerl.types import Field

PAD = 0
VOCAB = 40
PROMPTS = [[5, 9, 3, 17, 2], [11, 4], [8, 30, 21]]  # different lengths: the batch is left-padded
NO_EOS: list[int] = []


def tiny_model(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A 2-layer Llama with a 40-token vocabulary, random weights fixed by ``seed``."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **overrides,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer GPT-2: learned absolute positions, so wrong position ids change its output
    (Llama's rotary positions are shift-invariant and would hide a constant offset)."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    return GPT2LMHeadModel(config).eval()


def run(model, prompts=PROMPTS, eos=NO_EOS, seed: int | None = 0, tokenizer=None, **params):
    """``generate`` on left-padded ``prompts`` with a seeded generator."""
    ids, mask = left_pad(prompts, PAD)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return generate(
        model,
        ids,
        mask,
        SamplingParams(**params),
        eos_token_id=eos,
        pad_token_id=PAD,
        generator=generator,
        tokenizer=tokenizer,
    )


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One character per token id (id 0 is the pad), so stop strings can span tokens."""
    chars = "abcdefghijklmnopqrstuvwxyz0123456789 .!"
    vocab = {"[PAD]": PAD} | {c: i + 1 for i, c in enumerate(chars)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[PAD]"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]")


def response_lengths(batch) -> list[int]:
    return batch[Field.RESPONSE_MASK].sum(-1).tolist()


def test_batch_has_the_rollout_layout():
    out = run(tiny_model(), eos=VOCAB, max_new_tokens=6)  # an EOS id never sampled
    ids, mask = left_pad(PROMPTS, PAD)
    assert out.batch_size == torch.Size([3])
    assert torch.equal(out[Field.PROMPT_IDS], ids)
    assert torch.equal(out[Field.PROMPT_MASK], mask)
    assert out[Field.RESPONSE_IDS].shape == (3, 6)
    assert out[Field.INPUT_IDS].tolist() == torch.cat([ids, out[Field.RESPONSE_IDS]], 1).tolist()
    expected_mask = torch.cat([mask, out[Field.RESPONSE_MASK]], 1)
    assert torch.equal(out[Field.ATTENTION_MASK], expected_mask)
    assert out[Field.OLD_LOG_PROBS].dtype == torch.float32


@pytest.mark.parametrize("make_model", [tiny_model, tiny_gpt2], ids=["llama", "gpt2"])
def test_left_padding_is_invisible_to_greedy_generation(make_model):
    model = make_model()
    batch = run(model, greedy=True, max_new_tokens=12)
    for row, prompt in enumerate(PROMPTS):
        alone = run(model, prompts=[prompt], greedy=True, max_new_tokens=12)
        assert batch[Field.RESPONSE_IDS][row].tolist() == alone[Field.RESPONSE_IDS][0].tolist()
        torch.testing.assert_close(
            batch[Field.OLD_LOG_PROBS][row], alone[Field.OLD_LOG_PROBS][0], atol=1e-5, rtol=0
        )


def test_old_log_probs_equal_a_full_forward_pass_at_the_sampling_temperature():
    model = tiny_model()
    eos = list(range(1, 11))  # a quarter of the vocabulary: rows end at different steps
    out = run(model, eos=eos, temperature=0.7, max_new_tokens=12, seed=3)
    lengths = response_lengths(out)
    assert len(set(lengths)) > 1, "scenario: rows should finish at different steps"

    mask = out[Field.ATTENTION_MASK]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(out[Field.INPUT_IDS], attention_mask=mask, position_ids=positions).logits
    width, resp = out[Field.PROMPT_IDS].shape[1], out[Field.RESPONSE_IDS].shape[1]
    next_token_logits = logits[:, width - 1 : width + resp - 1] / 0.7
    expected = log_probs_from_logits(next_token_logits, out[Field.RESPONSE_IDS])
    expected = expected * out[Field.RESPONSE_MASK]
    torch.testing.assert_close(out[Field.OLD_LOG_PROBS], expected, atol=1e-5, rtol=0)


def test_same_seed_gives_the_same_batch_and_another_seed_a_different_one():
    model = tiny_model()
    first, again = run(model, seed=1, max_new_tokens=10), run(model, seed=1, max_new_tokens=10)
    other = run(model, seed=2, max_new_tokens=10)
    assert (first == again).all()
    assert not torch.equal(first[Field.RESPONSE_IDS], other[Field.RESPONSE_IDS])


def test_a_row_ends_with_its_first_eos_and_the_batch_is_trimmed_to_the_longest_row():
    model = tiny_model()
    free = run(model, greedy=True, max_new_tokens=8)[Field.RESPONSE_IDS]
    eos = [free[0, 2].item(), free[1, 5].item()]  # two EOS ids, met at different steps
    out = run(model, eos=eos, greedy=True, max_new_tokens=8)

    ends = [next(t for t in range(8) if free[row, t].item() in eos) for row in range(3)]
    width = max(ends) + 1
    assert len(set(ends)) > 1 and width < 8, "scenario: rows end at different steps, early"
    assert out[Field.RESPONSE_IDS].shape[1] == width
    for row, end in enumerate(ends):
        assert out[Field.RESPONSE_IDS][row].tolist() == free[row, : end + 1].tolist() + [PAD] * (
            width - end - 1
        )
        assert out[Field.RESPONSE_MASK][row].tolist() == [1] * (end + 1) + [0] * (width - end - 1)
        assert (out[Field.OLD_LOG_PROBS][row, end + 1 :] == 0).all()
        assert (out[Field.OLD_LOG_PROBS][row, : end + 1] < 0).all()


def test_generation_stops_early_when_every_row_has_ended():
    model = tiny_model()
    out = run(model, eos=list(range(VOCAB)), max_new_tokens=16)
    assert out[Field.RESPONSE_IDS].shape[1] == 1
    assert response_lengths(out) == [1, 1, 1]


@pytest.mark.parametrize("truncation", [{"top_k": 1}, {"top_p": 1e-6}])
def test_top_k_1_and_a_tiny_nucleus_sample_the_greedy_tokens(truncation):
    model = tiny_model()
    greedy = run(model, greedy=True, max_new_tokens=10)
    sampled = run(model, temperature=0.7, max_new_tokens=10, **truncation)
    assert torch.equal(sampled[Field.RESPONSE_IDS], greedy[Field.RESPONSE_IDS])


def test_top_k_and_top_p_sample_only_inside_the_truncated_set():
    torch.manual_seed(0)
    logits = torch.randn(1, 50).expand(4000, 50)
    generator = torch.Generator().manual_seed(0)
    top5 = set(logits[0].topk(5).indices.tolist())
    tokens, _ = sample_next(logits, SamplingParams(top_k=5), generator)
    assert set(tokens.tolist()) == top5

    probs, order = logits[0].softmax(-1).sort(descending=True)
    nucleus_size = int((probs.cumsum(0) - probs <= 0.5).sum())
    tokens, _ = sample_next(logits, SamplingParams(top_p=0.5), generator)
    assert set(tokens.tolist()) == set(order[:nucleus_size].tolist())


def test_samples_follow_the_tempered_softmax_and_report_its_log_probs():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).expand(40000, 5)
    params = SamplingParams(temperature=0.5)
    tokens, log_probs = sample_next(logits, params, torch.Generator().manual_seed(0))
    expected = torch.softmax(logits[0] / 0.5, -1)
    frequencies = torch.bincount(tokens, minlength=5) / len(tokens)
    torch.testing.assert_close(frequencies, expected, atol=0.01, rtol=0)
    torch.testing.assert_close(log_probs, expected.log()[tokens])


def test_a_stop_string_ends_its_row_right_after_the_token_that_completes_it():
    model, tokenizer = tiny_model(), char_tokenizer()
    free = run(model, greedy=True, max_new_tokens=12)[Field.RESPONSE_IDS]
    stop = tokenizer.decode(free[0, 3:5].tolist())  # two tokens, completed at step 4
    out = run(model, greedy=True, max_new_tokens=12, stop_strings=(stop,), tokenizer=tokenizer)

    for row in range(3):
        texts = [tokenizer.decode(free[row, : t + 1].tolist()) for t in range(12)]
        length = next((t + 1 for t, text in enumerate(texts) if stop in text), 12)
        assert response_lengths(out)[row] == length
        assert out[Field.RESPONSE_IDS][row, :length].tolist() == free[row, :length].tolist()
    assert response_lengths(out)[0] <= 5


def test_stop_strings_need_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        run(tiny_model(), stop_strings=("x",))


@pytest.mark.parametrize("training", [True, False])
def test_generation_runs_in_eval_mode_and_restores_the_training_flag(training):
    model = tiny_model(attention_dropout=0.5)  # dropout would make greedy runs disagree
    model.train(training)
    first = run(model, greedy=True, max_new_tokens=8)
    second = run(model, greedy=True, max_new_tokens=8)
    assert model.training is training
    assert torch.equal(first[Field.RESPONSE_IDS], second[Field.RESPONSE_IDS])
    torch.testing.assert_close(first[Field.OLD_LOG_PROBS], second[Field.OLD_LOG_PROBS])


@pytest.mark.parametrize(
    "bad",
    [{"temperature": 0.0}, {"top_p": 0.0}, {"top_k": -1}, {"max_new_tokens": 0}],
)
def test_invalid_sampling_params_are_rejected_with_the_key_named(bad):
    (key,) = bad
    with pytest.raises(ValueError, match=key):
        SamplingParams(**bad)


@pytest.mark.parametrize("make_model", [tiny_model, tiny_gpt2])
def test_a_repeated_prompt_is_prefilled_once_and_samples_as_if_it_were_not(make_model, monkeypatch):
    from placerl.rollout import sampling

    model = make_model()
    group = [p for p in PROMPTS for _ in range(4)]  # GRPO-style: each prompt 4 times
    prefill_rows = []
    forward = model.forward

    def spy(*args, **kwargs):
        if not prefill_rows:
            prefill_rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    shared = run(model, prompts=group, max_new_tokens=6)
    assert prefill_rows == [len(PROMPTS)], "one prefill row per distinct prompt"
    monkeypatch.setattr(sampling, "distinct_prompts", lambda ids, mask: None)
    plain = run(model, prompts=group, max_new_tokens=6)
    assert torch.equal(shared[Field.RESPONSE_IDS], plain[Field.RESPONSE_IDS])
    torch.testing.assert_close(
        shared[Field.OLD_LOG_PROBS], plain[Field.OLD_LOG_PROBS], rtol=1e-5, atol=1e-6
    )
