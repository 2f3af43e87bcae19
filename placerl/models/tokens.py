"""Special tokens of real tokenizers: which ids end a response, and the pad id used inside.

Hugging Face models spread their end tokens over three places, and ``model.generate`` reads
them together: the tokenizer's ``eos_token`` (``<|endoftext|>`` in Qwen2 base tokenizers), the
``eos_token_id`` of ``generation_config.json`` (often a list: Qwen2.5-Instruct has
``[<|im_end|>, <|endoftext|>]``, Llama-3 three ids), and the chat template, whose assistant
turn closes with an end-of-turn token (``<|im_end|>`` in ChatML). A response ends at the first
of any of them. placerl reads all three:

- ``end_token_ids``: every id that ends a sampled response (sampling stops there);
- ``turn_end_id``: the token the chat template closes an assistant turn with, found by
  rendering a two-turn conversation and reading the first special token after the answer;
- ``target_end``: the rule for training targets (SFT completions, DPO/RM responses), so that
  what the model is taught to emit is what sampling stops at (see its docstring).

A tokenizer without a pad token keeps its files as they are: ``load_tokenizer`` pads with the
EOS id in memory (padded positions are always masked out), and ``save_tokenizer`` copies the
user's tokenizer files verbatim instead of re-serialising the in-memory tokenizer.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable
from pathlib import Path

SOURCE_ATTR = "_placerl_source_dir"  # where load_tokenizer read the tokenizer's files
_TURN_END_ATTR = "_placerl_turn_end"

# Files a tokenizer is made of (transformers' and sentencepiece/tiktoken names); exporting a
# loaded tokenizer copies the ones its source directory has, byte for byte.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
TOKENIZER_GLOBS = ("*.tiktoken", "tokenization_*.py", "additional_chat_templates/*")


def turn_end_id(tokenizer) -> int | None:
    """The id the chat template closes an assistant turn with (``<|im_end|>`` for ChatML),
    or None: no template, or one that closes turns with plain text (``"\\n"``)."""
    template = getattr(tokenizer, "chat_template", None)
    cached = getattr(tokenizer, _TURN_END_ATTR, None)
    if cached is not None and cached[0] == template:  # cached for this very template
        return cached[1]
    found = _find_turn_end(tokenizer)
    with contextlib.suppress(AttributeError):  # an object without attributes: recompute
        setattr(tokenizer, _TURN_END_ATTR, (template, found))
    return found


def _find_turn_end(tokenizer) -> int | None:
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker = "PLACERLANSWER"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template with its own rules (roles, system turns): no turn end known
        return None
    if not isinstance(text, str) or marker not in text:
        return None
    tail = text[text.rindex(marker) + len(marker) :]
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            return int(token_id)
    return None


def generation_end_ids(model) -> tuple[int, ...]:
    """``generation_config.eos_token_id`` of ``model`` (an int or a list) as a tuple."""
    config = getattr(model, "generation_config", None)
    return _as_ids(getattr(config, "eos_token_id", None))


def end_token_ids(tokenizer, model=None) -> tuple[int, ...]:
    """Every id that ends a response, in a fixed order without repeats: the tokenizer's EOS,
    the chat template's turn end, and ``model.generation_config``'s end tokens."""
    ids = [*_as_ids(getattr(tokenizer, "eos_token_id", None)), *_as_ids(turn_end_id(tokenizer))]
    if model is not None:
        ids += generation_end_ids(model)
    return tuple(dict.fromkeys(ids))


def target_end(ids: list[int], tokenizer, decode=None) -> list[int]:
    """A training target (response token ids) ended by exactly one end token.

    The rule, for every stage that trains on fixed responses (SFT, DPO, RM):

    1. a target that contains an end token (the template's turn end, e.g. ``<|im_end|>``, or
       the tokenizer's EOS) ends at its last one: what the template writes after it is dropped
       when it is only whitespace (ChatML's ``"\\n"`` between turns), since sampling stops at
       the end token and never produces it;
    2. otherwise (plain text, or a template that closes turns with text) the tokenizer's EOS is
       appended, once.

    So a ChatML answer is ``…<|im_end|>`` and a plain one ``…<eos>``, never
    ``<|im_end|>\\n<|im_end|>``; and the reward model's score token, the last response token,
    is the same end token in RM training and in PPO scoring.
    """
    ends = set(end_token_ids(tokenizer))
    last = max((i for i, t in enumerate(ids) if t in ends), default=None)
    if last is not None:
        rest = ids[last + 1 :]
        if not rest or not (decode or tokenizer.decode)(rest).strip():
            return ids[: last + 1]
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no EOS token to end a response with")
    return [*ids, int(eos)]


def _as_ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (int(value),)
    if isinstance(value, Iterable):
        return tuple(int(v) for v in value if v is not None)
    return ()


def copy_tokenizer_files(source: str | Path, target: str | Path) -> bool:
    """Copy the tokenizer files of ``source`` into ``target`` verbatim; False if it has none
    (then the caller serialises the in-memory tokenizer instead)."""
    source, target = Path(source), Path(target)
    files = [source / name for name in TOKENIZER_FILES if (source / name).is_file()]
    for pattern in TOKENIZER_GLOBS:
        files += [p for p in source.glob(pattern) if p.is_file()]
    if not files:
        return False
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        destination = target / file.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, destination)
    return True
