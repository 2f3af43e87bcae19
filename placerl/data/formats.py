"""The three dataset formats, following TRL's conventions, normalized to plain text.

- prompt datasets: ``prompt`` (a string, or a list of chat messages); every other column is
  kept and handed to the reward function (e.g. the reference answer of a verifiable task);
- preference datasets: ``prompt``, ``chosen``, ``rejected``; all strings, or all
  conversational (lists of ``{"role", "content"}``). Unlike TRL, the implicit-prompt form
  (no ``prompt`` column, the prompt hidden in a shared prefix) is not accepted;
- SFT datasets: ``prompt`` + ``completion`` (strings or conversational), or ``messages``.

Conversations are rendered with the tokenizer's chat template. A completion is what the
template writes after the prompt (the assistant turn *with* its end-of-turn markup), found as
in TRL by rendering prompt and prompt+completion and splitting at their common prefix, so a
model also learns to close its turn. Every bad row is a ``UserError`` naming the row and the
column; the ``*_rows`` helpers check a whole dataset up front, before any training starts.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets
from jinja2 import TemplateError

from placerl.data.loading import load_records, require_one_of
from placerl.errors import UserError

PROMPT_COLUMNS = ("prompt",)
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
SFT_COLUMN_CHOICES = (("prompt", "completion"), ("messages",))

Message = dict[str, Any]


# --- whole datasets --------------------------------------------------------------------------


def load_prompt_dataset(path: str | Path) -> datasets.Dataset:
    """A prompt dataset file, with its ``prompt`` column checked to exist."""
    return load_records(path, PROMPT_COLUMNS, "prompt dataset")


def load_preference_dataset(path: str | Path) -> datasets.Dataset:
    """A preference dataset file, with ``prompt``/``chosen``/``rejected`` checked to exist."""
    return load_records(path, PREFERENCE_COLUMNS, "preference dataset")


def load_sft_dataset(path: str | Path) -> datasets.Dataset:
    """An SFT dataset file with ``prompt``+``completion`` or ``messages`` columns."""
    dataset = load_records(path, (), "SFT dataset")
    require_one_of(dataset, SFT_COLUMN_CHOICES, "SFT dataset", str(path))
    return dataset


def prompt_rows(records: Iterable[Mapping[str, Any]], tokenizer, source: str = "") -> list[str]:
    """Every row's prompt text; ``source`` (a file name) prefixes the row in errors."""
    return [to_prompt_text(ex, tokenizer, _row(source, i)) for i, ex in enumerate(records)]


def sft_rows(
    records: Iterable[Mapping[str, Any]], tokenizer, source: str = ""
) -> list[tuple[str, str]]:
    """Every row as (prompt, completion) text."""
    return [to_sft_pair(ex, tokenizer, _row(source, i)) for i, ex in enumerate(records)]


def preference_rows(
    records: Iterable[Mapping[str, Any]], tokenizer, source: str = ""
) -> list[tuple[str, str, str]]:
    """Every row as (prompt, chosen, rejected) text."""
    return [to_preference_triple(ex, tokenizer, _row(source, i)) for i, ex in enumerate(records)]


def _row(source: str, index: int) -> str:
    return f"{source} row {index}" if source else f"row {index}"


# --- one example -----------------------------------------------------------------------------


def to_prompt_text(example: Mapping[str, Any], tokenizer, where: str = "row") -> str:
    """The prompt as the model will see it: a string as is, a conversation rendered with the
    chat template and its generation prompt (so the model answers as the assistant)."""
    prompt = _column(example, "prompt", where)
    if isinstance(prompt, str):
        return _nonempty_text(prompt, "prompt", where)
    messages = _messages(prompt, "prompt", where)
    return _render(tokenizer, messages, True, "prompt", where)


def prompt_as_given(example: Mapping[str, Any], where: str = "row") -> str | list[Message]:
    """The prompt as the dataset gave it, for the reward function: the string, or the list of
    messages (checked, None-filled keys dropped), not the text the chat template renders."""
    prompt = _column(example, "prompt", where)
    return prompt if isinstance(prompt, str) else _messages(prompt, "prompt", where)


def prompt_extras(example: Mapping[str, Any]) -> dict[str, Any]:
    """The columns besides ``prompt``: what a reward function gets (answers, test cases)."""
    return {key: value for key, value in example.items() if key != "prompt"}


def to_sft_pair(example: Mapping[str, Any], tokenizer, where: str = "row") -> tuple[str, str]:
    """(prompt, completion) text from ``prompt``/``completion`` or from ``messages``."""
    if "messages" in example and "completion" not in example:
        return _sft_from_messages(example["messages"], tokenizer, where)
    prompt = _column(example, "prompt", where)
    completion = _column(example, "completion", where)
    if isinstance(prompt, str) and isinstance(completion, str):
        return _nonempty_text(prompt, "prompt", where), _nonempty_text(
            completion, "completion", where
        )
    _same_style(prompt, {"completion": completion}, where)
    return _render_continuations(
        tokenizer,
        _messages(prompt, "prompt", where),
        {"completion": _messages(completion, "completion", where)},
        where,
    )


def to_preference_triple(
    example: Mapping[str, Any], tokenizer, where: str = "row"
) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) text; the two responses must differ."""
    prompt = _column(example, "prompt", where)
    chosen = _column(example, "chosen", where)
    rejected = _column(example, "rejected", where)
    if all(isinstance(v, str) for v in (prompt, chosen, rejected)):
        triple = (
            _nonempty_text(prompt, "prompt", where),
            _nonempty_text(chosen, "chosen", where),
            _nonempty_text(rejected, "rejected", where),
        )
    else:
        _same_style(prompt, {"chosen": chosen, "rejected": rejected}, where)
        responses = {
            "chosen": _messages(chosen, "chosen", where),
            "rejected": _messages(rejected, "rejected", where),
        }
        for column, messages in responses.items():  # a template's markup alone is no answer
            if not any(m["content"].strip() for m in messages):
                raise UserError(
                    f"'{column}' has no content (every message's 'content' is empty)",
                    where=f"{where}, column '{column}'",
                )
        text, *answers = _render_continuations(
            tokenizer, _messages(prompt, "prompt", where), responses, where
        )
        triple = (text, answers[0], answers[1])
    if triple[1] == triple[2]:
        raise UserError(
            "'chosen' and 'rejected' are identical; a preference pair needs two different "
            "responses",
            where=f"{where}, column 'rejected'",
        )
    return triple


def _sft_from_messages(value: Any, tokenizer, where: str) -> tuple[str, str]:
    """All turns but the last as the prompt; the last, an assistant turn, as the completion."""
    messages = _messages(value, "messages", where)
    if messages[-1]["role"] != "assistant" or len(messages) < 2:
        raise UserError(
            f"'messages' must end with an assistant turn after at least one other turn, got "
            f"roles {[m['role'] for m in messages]}",
            where=f"{where}, column 'messages'",
        )
    return _render_continuations(
        tokenizer, messages[:-1], {"messages": messages[-1:]}, where, prompt_column="messages"
    )


def _render_continuations(
    tokenizer,
    prompt: list[Message],
    responses: dict[str, list[Message]],
    where: str,
    prompt_column: str = "prompt",
) -> tuple[str, ...]:
    """Render the prompt (with generation prompt) and prompt+response for each response, and
    cut at the common prefix: some templates render the generation prompt differently from
    the start of an assistant turn, and tokens must agree between training and sampling."""
    head = _render(tokenizer, prompt, True, prompt_column, where)
    fulls = {
        col: _render(tokenizer, prompt + msgs, False, col, where) for col, msgs in responses.items()
    }
    prefix = _common_prefix([head, *fulls.values()])
    tails = []
    for column, full in fulls.items():
        tail = full[len(prefix) :]
        if not tail.strip():
            raise UserError(
                f"'{column}' renders to no text after the prompt with this chat template",
                where=f"{where}, column '{column}'",
            )
        tails.append(tail)
    return (prefix, *tails)


def _common_prefix(texts: list[str]) -> str:
    """Character-wise common prefix (``os.path.commonprefix`` works on any strings)."""
    return os.path.commonprefix(texts)


# --- validation ------------------------------------------------------------------------------


def _column(example: Mapping[str, Any], column: str, where: str) -> Any:
    if column not in example:
        raise UserError(
            f"missing column '{column}'; columns present: {', '.join(example)}", where=where
        )
    return example[column]


def _nonempty_text(value: str, column: str, where: str) -> str:
    if not value.strip():
        raise UserError(f"'{column}' is an empty string", where=f"{where}, column '{column}'")
    return value


def _same_style(prompt: Any, responses: dict[str, Any], where: str) -> None:
    """Strings and conversations cannot be mixed in one row: there is no single rendering."""
    for column, value in {"prompt": prompt, **responses}.items():
        if isinstance(value, str) or value is None:
            kinds = {c: _style(v) for c, v in {"prompt": prompt, **responses}.items()}
            raise UserError(
                f"columns mix plain text and conversations ({kinds}); use strings everywhere "
                f"or lists of {{'role', 'content'}} messages everywhere",
                where=f"{where}, column '{column}'",
            )


def _style(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    return "conversation" if isinstance(value, list) else type(value).__name__


def _messages(value: Any, column: str, where: str) -> list[Message]:
    """A non-empty list of ``{"role": str, "content": str}``; keys that Arrow filled with
    None (a field present in some rows only) are dropped so templates do not see them."""
    at = f"{where}, column '{column}'"
    if not isinstance(value, list) or not value:
        raise UserError(
            f"'{column}' must be a string or a non-empty list of {{'role', 'content'}} "
            f"messages, got {_describe(value)}",
            where=at,
        )
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise UserError(
                f"message {index} of '{column}' must be an object with 'role' and 'content', "
                f"got {_describe(message)}",
                where=at,
            )
        for key in ("role", "content"):
            if not isinstance(message.get(key), str) or (key == "role" and not message[key]):
                raise UserError(
                    f"message {index} of '{column}' needs a string '{key}', got "
                    f"{_describe(message.get(key))}",
                    where=at,
                )
        _known_role(message["role"], f"message {index} of '{column}'", at)
        messages.append({k: v for k, v in message.items() if v is not None})
    return messages


# the roles chat templates know (OpenAI's and Hugging Face's conventions; Llama 3.1's ipython)
ROLES = ("system", "user", "assistant", "tool", "developer", "function", "ipython")


def _known_role(role: str, what: str, at: str) -> None:
    """A typo such as ``"usr"`` would otherwise render silently into a template (or be
    dropped by it) and train on a conversation that is not the one meant."""
    if role in ROLES:
        return
    close = difflib.get_close_matches(role, ROLES, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UserError(
        f"{what} has role {role!r}, which no chat template knows; expected one of "
        f"{', '.join(ROLES)}{hint}",
        where=at,
    )


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _render(tokenizer, messages: list[Message], generation: bool, column: str, where: str) -> str:
    """Apply the chat template, turning a template's own refusal into a row error."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"'{column}' is a conversation, but the tokenizer has no chat template to render "
            f"it; use plain-text columns or a tokenizer with a chat_template",
            where=f"{where}, column '{column}'",
        )
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation
        )
    except TemplateError as exc:
        raise UserError(
            f"the chat template rejected '{column}': {exc}", where=f"{where}, column '{column}'"
        ) from None
