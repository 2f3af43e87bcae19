"""Dataset formats normalized to text, then tokenized and padded into training batches."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from placerl.data.collate import (
    IGNORE_INDEX,
    encode_prompts,
    left_pad,
    preference_batch,
    sft_batch,
)
from placerl.data.formats import (
    preference_rows,
    prompt_extras,
    prompt_rows,
    sft_rows,
    to_preference_triple,
    to_prompt_text,
    to_sft_pair,
)
from placerl.errors import UserError

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = [
    "user",
    "assistant",
    "system",
    ":",
    "hi",
    "hello",
    "how",
    "are",
    "you",
    "fine",
    "thanks",
    "good",
    "bad",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
]
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one id per word, so expected ids can be written by hand."""
    vocab = {word: i for i, word in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = TEMPLATE
    return fast


def ids(tok, text: str) -> list[int]:
    return tok.convert_tokens_to_ids(text.split())


def error(fn, *args, **kwargs) -> UserError:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    return info.value


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


# --- formats ---------------------------------------------------------------------------------


def test_prompt_text_plain_and_conversational(tok):
    assert to_prompt_text({"prompt": "hi"}, tok) == "hi"
    rendered = to_prompt_text({"prompt": chat(("user", "hi"))}, tok)
    assert rendered == "user : hi </s> assistant : "


def test_prompt_extras_keep_everything_but_the_prompt():
    assert prompt_extras({"prompt": "hi", "answer": "2", "id": 7}) == {"answer": "2", "id": 7}


def test_bad_prompt_rows_name_row_and_column(tok):
    err = error(prompt_rows, [{"prompt": "hi"}, {"prompt": "   "}], tok, source="p.jsonl")
    assert err.where == "p.jsonl row 1, column 'prompt'" and "empty" in err.message
    err = error(prompt_rows, [{"prompt": 3}], tok)
    assert err.where == "row 0, column 'prompt'" and "int 3" in err.message
    err = error(prompt_rows, [{"prompt": [{"role": "user"}]}], tok)
    assert "needs a string 'content'" in err.message


def test_conversation_without_chat_template_is_a_user_error(tok):
    plain = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer)
    err = error(to_prompt_text, {"prompt": chat(("user", "hi"))}, plain)
    assert "no chat template" in err.message


def test_sft_plain_pair(tok):
    assert to_sft_pair({"prompt": "hi", "completion": "hello"}, tok) == ("hi", "hello")


def test_sft_messages_split_at_last_assistant_turn(tok):
    messages = chat(("system", "a"), ("user", "hi"), ("assistant", "hello"))
    prompt, completion = to_sft_pair({"messages": messages}, tok)
    assert prompt == "system : a </s> user : hi </s> assistant : "
    assert completion == "hello </s> "  # the assistant turn with its end-of-turn markup


def test_sft_conversational_prompt_completion_matches_messages(tok):
    example = {"prompt": chat(("user", "hi")), "completion": chat(("assistant", "hello"))}
    messages = {"messages": chat(("user", "hi"), ("assistant", "hello"))}
    assert to_sft_pair(example, tok) == to_sft_pair(messages, tok)


def test_sft_messages_must_end_with_assistant(tok):
    err = error(sft_rows, [{"messages": chat(("user", "hi"), ("user", "b"))}], tok)
    assert err.where == "row 0, column 'messages'" and "['user', 'user']" in err.message


def test_sft_empty_completion(tok):
    err = error(sft_rows, [{"prompt": "hi", "completion": ""}], tok)
    assert err.where == "row 0, column 'completion'"


def test_preference_plain_and_conversational(tok):
    assert to_preference_triple({"prompt": "hi", "chosen": "good", "rejected": "bad"}, tok) == (
        "hi",
        "good",
        "bad",
    )
    example = {
        "prompt": chat(("user", "how are you")),
        "chosen": chat(("assistant", "fine thanks")),
        "rejected": chat(("assistant", "bad")),
    }
    prompt, chosen, rejected = to_preference_triple(example, tok)
    assert prompt == "user : how are you </s> assistant : "
    assert (chosen, rejected) == ("fine thanks </s> ", "bad </s> ")


def test_preference_bad_rows(tok):
    rows = [
        {"prompt": "hi", "chosen": "good", "rejected": "bad"},
        {"prompt": "hi", "chosen": "good", "rejected": "good"},
    ]
    err = error(preference_rows, rows, tok)
    assert err.where == "row 1, column 'rejected'" and "identical" in err.message
    mixed = [{"prompt": "hi", "chosen": chat(("assistant", "a")), "rejected": "b"}]
    err = error(preference_rows, mixed, tok)
    assert err.where.startswith("row 0, column") and "mix plain text" in err.message
    missing = [{"prompt": "hi", "chosen": "a"}]
    assert "missing column 'rejected'" in error(preference_rows, missing, tok).message


# --- collate ---------------------------------------------------------------------------------


def test_encode_prompts_prepends_bos_once(tok):
    bos = tok.bos_token_id
    assert encode_prompts(tok, ["hi", "<s> hi"], max_len=8) == [[bos, *ids(tok, "hi")]] * 2
    assert encode_prompts(tok, ["hi"], max_len=8, add_bos=False) == [ids(tok, "hi")]


def test_encode_prompts_never_truncates(tok):
    err = error(encode_prompts, tok, ["hi", "a b c d e f"], max_len=4, rows=[10, 11])
    assert err.where == "row 11" and "7 tokens" in err.message and "max_prompt_len=4" in err.message


def test_left_pad():
    ids_, mask = left_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids_.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids_.dtype == mask.dtype == torch.int64


def test_sft_batch_masks_prompt_and_padding(tok):
    batch = sft_batch(tok, [("hi", "hello"), ("how are you", "fine")], max_len=16)
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    hi, hello = ids(tok, "hi"), ids(tok, "hello")
    fine = ids(tok, "fine")
    assert batch["input_ids"][0].tolist() == [bos, *hi, *hello, eos, pad, pad]
    assert batch["labels"][0].tolist() == [-100, -100, *hello, eos, -100, -100]
    assert batch["input_ids"][1].tolist() == [bos, *ids(tok, "how are you"), *fine, eos]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 4 + [*fine, eos]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert batch["num_truncated"] == 0


def test_sft_batch_keeps_a_template_eos_single(tok):
    batch = sft_batch(tok, [("hi", "hello </s>")], max_len=16)
    assert batch["labels"][0].tolist() == [-100, -100, *ids(tok, "hello"), tok.eos_token_id]


def test_sft_batch_truncates_completions_and_counts(tok):
    batch = sft_batch(tok, [("hi", "a b c d"), ("hi", "a")], max_len=4)
    assert batch["input_ids"].shape == (2, 4)
    assert batch["labels"][0].tolist() == [-100, -100, *ids(tok, "a b")]  # EOS cut too
    assert batch["num_truncated"] == 1


def test_sft_batch_prompt_too_long_is_an_error(tok):
    err = error(sft_batch, tok, [("hi", "a"), ("a b c", "d")], max_len=4)
    assert err.where == "row 1" and "4 tokens" in err.message


def test_preference_batch_layout(tok):
    triples = [("hi", "good", "bad"), ("how are you", "fine thanks", "bad")]
    batch = preference_batch(tok, triples, max_len=16)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    input_ids, loss_mask = batch["input_ids"], batch["loss_mask"]
    assert input_ids.shape == loss_mask.shape == (4, 7)
    assert input_ids[0, :4].tolist() == [bos, *ids(tok, "hi good"), eos]  # chosen 0
    assert input_ids[2, :4].tolist() == [bos, *ids(tok, "hi bad"), eos]  # rejected 0
    assert input_ids[1].tolist() == [bos, *ids(tok, "how are you fine thanks"), eos]
    assert loss_mask[1].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert loss_mask[3].tolist() == [0, 0, 0, 0, 1, 1, 0]
    assert (loss_mask <= batch["attention_mask"]).all()
    assert batch["num_truncated"] == 0


def test_preference_batch_counts_truncated_pairs(tok):
    batch = preference_batch(tok, [("hi", "a b c", "d"), ("hi", "a", "b")], max_len=4)
    assert batch["input_ids"].shape == (4, 4)
    assert batch["num_truncated"] == 1
    assert batch["loss_mask"].sum(dim=1).tolist() == [2, 2, 2, 2]


def test_missing_eos_is_a_user_error(tok):
    no_eos = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, pad_token="<pad>")
    assert error(sft_batch, no_eos, [("hi", "a")], max_len=8).where == "tokenizer"
    assert sft_batch(no_eos, [("hi", "a")], max_len=8, eos=False)["input_ids"].shape == (1, 2)
