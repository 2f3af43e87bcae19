"""Real-shaped chat models: what the builders make, which tokens end a response, and that the
sampler stops where ``model.generate`` stops, each end token once in the response mask."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from placerl.data.collate import encode_prompts, left_pad
from placerl.models.chat_factory import ENDOFTEXT, IM_END
from placerl.models.loading import load_policy, load_tokenizer
from placerl.models.tokens import end_token_ids, turn_end_id
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.types import Field
from tests.hf.conftest import VOCAB

PROMPTS = [
    [{"role": "user", "content": "Reverse the letters abc"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 1 2"}],
    [{"role": "user", "content": "fox"}],
]


def _prompt_batch(tok):
    texts = [
        tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in PROMPTS
    ]
    return left_pad(encode_prompts(tok, texts, 64), tok.pad_token_id)


def test_builders_make_real_shaped_checkpoints(chat_model_dir):
    """The on-disk files look like a Qwen2/Llama chat checkpoint: no pad token, EOS
    <|endoftext|>, a list of end tokens in generation_config.json, tied embeddings."""
    gen = json.loads((chat_model_dir / "generation_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(chat_model_dir)
    model = AutoModelForCausalLM.from_pretrained(chat_model_dir)
    im_end, eot = tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)
    assert gen["eos_token_id"] == [im_end, eot]
    assert tok.pad_token is None and tok.eos_token == ENDOFTEXT
    assert model.config.pad_token_id is None and model.config.vocab_size == VOCAB
    assert type(model).__name__ in ("Qwen2ForCausalLM", "LlamaForCausalLM")
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    text = tok.apply_chat_template(
        PROMPTS[0] + [{"role": "assistant", "content": "cba"}], tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\ncba<|im_end|>\n")


def test_end_tokens_are_the_union_of_tokenizer_template_and_generation_config(
    chat_model_dir, tiny_model_dir
):
    tok, model = load_tokenizer(chat_model_dir), load_policy(chat_model_dir)
    im_end, eot = tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)
    assert turn_end_id(tok) == im_end
    assert set(end_token_ids(tok, model)) == {im_end, eot}
    assert set(end_token_ids(tok)) == {im_end, eot}  # the template's turn end, even alone
    plain = load_tokenizer(tiny_model_dir)  # "role: content\n" template: no turn-end token
    assert turn_end_id(plain) is None
    assert end_token_ids(plain, load_policy(tiny_model_dir)) == (plain.eos_token_id,)


def _lively(model, tok):
    """The model with weights that make greedy decoding vary (a random tied-embedding model
    only repeats its last token) and stay on the tokenizer's ids (the rows past them, as in
    real checkpoints, decode to nothing): so end tokens and stop strings can be chosen from
    what it is known to emit."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and "embed" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        embed = model.get_input_embeddings().weight
        embed.copy_(torch.randn(embed.shape, generator=generator))
        embed[len(tok) :] = 0
    return model


def _greedy_continuation(model, ids, mask, steps: int) -> torch.Tensor:
    """(B, steps) greedy tokens of ``model.generate`` run with no end token at all."""
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    return out[:, ids.shape[1] :]


def _expected_lengths(free: torch.Tensor, ends, tok=None, stops=()) -> list[int]:
    """Each row's length had it stopped at the first end token or completed stop string."""
    out = []
    for row in free.tolist():
        n = len(row)
        for step, token in enumerate(row):
            text = tok.decode(row[: step + 1]) if stops else ""
            if token in ends or any(s in text for s in stops):
                n = step + 1
                break
        out.append(n)
    return out


def _check_layout(batch, ends, budget: int) -> list[int]:
    """Every row: a prefix of real tokens, then padding; an end token at most once, and as
    the last real token when the row stopped short of the budget. Returns the lengths."""
    response, rmask = batch[Field.RESPONSE_IDS], batch[Field.RESPONSE_MASK]
    lengths = rmask.sum(-1).tolist()
    for row, n in enumerate(lengths):
        assert rmask[row, :n].all() and not rmask[row, n:].any()
        assert int(torch.isin(response[row, :n], torch.tensor(list(ends))).sum()) <= 1
    return lengths


def test_sampling_stops_at_every_end_token_like_model_generate(qwen_dir):
    """A random model rarely emits <|im_end|>, so the end tokens are set to tokens it is known
    to emit greedily: the sampler must stop at any generation_config end token (here none is
    the tokenizer's EOS), keep that token in the mask once, pad the rest, and match
    ``model.generate`` token for token."""
    tok = load_tokenizer(qwen_dir)
    model = _lively(load_policy(qwen_dir), tok)
    ids, mask = _prompt_batch(tok)
    free = _greedy_continuation(model, ids, mask, 8)
    chosen = [tok.convert_tokens_to_ids(IM_END), int(free[0, 2]), int(free[1, 4])]
    model.generation_config.eos_token_id = chosen
    worker = RolloutWorker(model, tok, SamplingParams(max_new_tokens=8, greedy=True))
    assert set(chosen) <= set(worker.end_ids)
    batch = worker.generate(ids, mask)
    lengths = _check_layout(batch, worker.end_ids, 8)
    assert lengths == _expected_lengths(free, set(worker.end_ids))
    assert lengths[0] <= 3 and lengths[1] <= 5 and max(lengths) > 1  # not all stop at once
    for row, n in enumerate(lengths):
        if n < 8:
            assert int(batch[Field.RESPONSE_IDS][row, n - 1]) in worker.end_ids
    reference = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )[:, ids.shape[1] :]
    for row, n in enumerate(lengths):  # model.generate stops at the same token
        assert batch[Field.RESPONSE_IDS][row, :n].tolist() == reference[row, :n].tolist()
        if n < 8:
            assert reference[row, n:].eq(tok.pad_token_id).all()


def test_stop_strings_and_the_tokenizer_eos_also_end_a_row(qwen_dir):
    tok = load_tokenizer(qwen_dir)
    model = _lively(load_policy(qwen_dir), tok)
    ids, mask = _prompt_batch(tok)
    free = _greedy_continuation(model, ids, mask, 6)
    model.generation_config.eos_token_id = [int(free[0, 1])]  # the tokenizer's EOS not listed
    stop = tok.decode(free[2, :3].tolist())[-2:]
    worker = RolloutWorker(
        model, tok, SamplingParams(max_new_tokens=6, greedy=True, stop_strings=(stop,))
    )
    assert tok.eos_token_id in worker.end_ids  # the tokenizer's EOS still ends a response
    batch = worker.generate(ids, mask)
    lengths = _check_layout(batch, worker.end_ids, 6)
    assert lengths == _expected_lengths(free, set(worker.end_ids), tok, (stop,))
    assert lengths[0] <= 2 and lengths[2] <= 3 and lengths[1] > 1


def test_each_row_says_why_it_stopped(qwen_dir):
    """``Field.STOP_REASON``: the end token, the stop string or the budget, as the sampler
    stopped; the step metrics' shares follow from it (issue 21.8)."""
    from placerl.rollout.stop_reasons import END_TOKEN, LENGTH, STOP_STRING, stop_metrics

    tok = load_tokenizer(qwen_dir)
    model = _lively(load_policy(qwen_dir), tok)
    ids, mask = _prompt_batch(tok)
    free = _greedy_continuation(model, ids, mask, 6)
    model.generation_config.eos_token_id = [int(free[0, 1])]
    stop = tok.decode(free[2, :3].tolist())[-2:]
    worker = RolloutWorker(
        model, tok, SamplingParams(max_new_tokens=6, greedy=True, stop_strings=(stop,))
    )
    batch = worker.generate(ids, mask)
    lengths = batch[Field.RESPONSE_MASK].sum(-1).tolist()
    expected = []
    for row, n in enumerate(lengths):
        last = int(batch[Field.RESPONSE_IDS][row, n - 1])
        text = tok.decode(batch[Field.RESPONSE_IDS][row, :n].tolist())
        if last in worker.end_ids:
            expected.append(END_TOKEN)
        elif stop in text:
            expected.append(STOP_STRING)
        else:
            assert n == 6  # nothing else stops a row short of the budget
            expected.append(LENGTH)
    assert batch[Field.STOP_REASON].tolist() == expected
    assert expected[0] == END_TOKEN and expected[2] == STOP_STRING
    shares = stop_metrics(batch[Field.STOP_REASON])
    assert shares["response/clipped_ratio"] == expected.count(LENGTH) / 3
    assert sum(shares.values()) == 1.0
