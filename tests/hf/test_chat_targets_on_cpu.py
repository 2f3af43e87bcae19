"""Training targets from chat templates end with the template's end token exactly once, and
plain-text targets with the tokenizer's EOS once (the rule in ``models/tokens.py``)."""

from __future__ import annotations

from placerl.data.collate import IGNORE_INDEX, preference_batch, sft_batch
from placerl.data.formats import to_preference_triple, to_sft_pair
from placerl.models.chat_factory import ENDOFTEXT, IM_END
from placerl.models.loading import load_tokenizer

CHAT_SFT = {
    "messages": [
        {"role": "user", "content": "Reverse abc"},
        {"role": "assistant", "content": "cba"},
    ]
}
CHAT_PREF = {
    "prompt": [{"role": "user", "content": "Add 2 3"}],
    "chosen": [{"role": "assistant", "content": "5"}],
    "rejected": [{"role": "assistant", "content": "6"}],
}


def _targets(batch) -> list[list[int]]:
    return [[t for t in row if t != IGNORE_INDEX] for row in batch["labels"].tolist()]


def _responses(batch) -> list[list[int]]:
    ids, mask = batch["input_ids"].tolist(), batch["loss_mask"].tolist()
    return [[t for t, m in zip(r, k, strict=True) if m] for r, k in zip(ids, mask, strict=True)]


def test_chatml_sft_target_ends_with_one_im_end_and_no_newline_after(chat_model_dir):
    tok = load_tokenizer(chat_model_dir)
    im_end, eot = tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)
    prompt, completion = to_sft_pair(CHAT_SFT, tok)
    assert completion == "cba<|im_end|>\n"  # the template's rendering, "\n" and all
    (target,) = _targets(sft_batch(tok, [(prompt, completion)], 64))
    assert target[-1] == im_end and target.count(im_end) == 1 and eot not in target
    assert tok.decode(target) == "cba<|im_end|>"  # not "<|im_end|>\n<|im_end|>"


def test_chatml_preference_responses_end_with_one_im_end(chat_model_dir):
    tok = load_tokenizer(chat_model_dir)
    im_end = tok.convert_tokens_to_ids(IM_END)
    triple = to_preference_triple(CHAT_PREF, tok)
    for response in _responses(preference_batch(tok, [triple], 64)):
        assert response[-1] == im_end and response.count(im_end) == 1
        assert tok.decode(response) in ("5<|im_end|>", "6<|im_end|>")


def test_plain_text_targets_get_the_tokenizer_eos_once(chat_model_dir, tiny_model_dir):
    for path in (chat_model_dir, tiny_model_dir):
        tok = load_tokenizer(path)
        eos = tok.eos_token_id
        (target,) = _targets(sft_batch(tok, [("Q: 1+1=", " 2")], 64))
        assert target[-1] == eos and target.count(eos) == 1
        eos_text = tok.eos_token
        (again,) = _targets(sft_batch(tok, [("Q: 1+1=", " 2" + eos_text)], 64))
        assert again == target  # an EOS already there is not doubled
        (spaced,) = _targets(sft_batch(tok, [("Q: 1+1=", " 2" + eos_text + "\n")], 64))
        assert spaced == target  # nor kept with the whitespace after it
        for response in _responses(preference_batch(tok, [("Q:", " yes", " no")], 64)):
            assert response[-1] == eos and response.count(eos) == 1


def test_builtin_template_turns_still_end_with_eos(tiny_model_dir):
    """The embedded tokenizer's template closes turns with "\\n" (no end token): EOS follows."""
    tok = load_tokenizer(tiny_model_dir)
    prompt, completion = to_sft_pair(CHAT_SFT, tok)
    (target,) = _targets(sft_batch(tok, [(prompt, completion)], 64))
    assert target[-1] == tok.eos_token_id and target.count(tok.eos_token_id) == 1
    assert tok.decode(target[:-1]).endswith("cba\n")


def test_no_eos_option_leaves_targets_as_rendered(chat_model_dir):
    tok = load_tokenizer(chat_model_dir)
    prompt, completion = to_sft_pair(CHAT_SFT, tok)
    (target,) = _targets(sft_batch(tok, [(prompt, completion)], 64, eos=False))
    assert tok.decode(target) == "cba<|im_end|>\n"
