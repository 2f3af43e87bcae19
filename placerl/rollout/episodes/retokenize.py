"""Where re-rendering a finished conversation and tokenising it whole would not give back the
ids the model saw: the evidence for tokenising observations alone (episodes/bridge.py).

Peers that rebuild the training sequence from messages (veRL #3960, #6719; TRL #2712, #4543)
train on ids that differ from the sampled ones wherever:

- ``same text, other ids``: the model sampled a split of some text that is not the one the
  tokenizer picks for it (BPE merges; a sampling model does this all the time);
- ``text differs``: the template writes a turn differently from what the model wrote (a tool
  call re-serialised from parsed JSON, whitespace a template adds or strips, the final
  turn's closing newline);
- ``special tokens``: a special token the model sampled inside a turn, lost by decoding;
- ``unknown ids``: ids past the tokenizer's vocabulary (embedding rows no token uses, as in
  real checkpoints), which decode to nothing.

``differences`` aligns the two id sequences (difflib) and labels each differing span with the
sources of our tokens there (prompt, model, observation) and one of the kinds above.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from placerl.data.collate import encode_prompts
from placerl.rollout.envs.protocol import Message
from placerl.rollout.episodes.record import Episode
from placerl.rollout.tools.parsing import HermesParser, ToolCall, ToolCallParser


@dataclass(frozen=True)
class Difference:
    """One span where our ids (``ours``, from position ``start``) and the re-rendered ids
    (``theirs``) differ; ``sources`` of our tokens there (of the token an insertion goes
    before, or "end"); ``kind``: see the module doc."""

    start: int
    ours: tuple[int, ...]
    theirs: tuple[int, ...]
    sources: tuple[str, ...]
    kind: str

    def describe(self, tokenizer) -> str:
        def pieces(ids):
            return [tokenizer.decode([i]) for i in ids]

        where = "/".join(sorted(set(self.sources)))
        return (
            f"@{self.start} [{where}] {self.kind}: sampled {pieces(self.ours)!r} vs "
            f"re-rendered {pieces(self.theirs)!r}"
        )


def rerendered_ids(
    tokenizer, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None
) -> list[int]:
    """The conversation rendered by the chat template and tokenised whole, as a trainer that
    rebuilds sequences from messages would (BOS as placerl adds it to prompts)."""
    text = tokenizer.apply_chat_template(
        list(messages), tools=list(tools) if tools else None, tokenize=False
    )
    return encode_prompts(tokenizer, [text], max_len=10**9)[0]


def structured(messages: Sequence[Message], parser: ToolCallParser | None = None) -> list[Message]:
    """The messages as peers re-render them: an assistant turn's tool calls parsed out of its
    text into ``tool_calls`` (the template then serialises them its own way)."""
    parser = parser or HermesParser()
    out = []
    for message in messages:
        if message["role"] != "assistant":
            out.append(message)
            continue
        parsed = parser.parse(message["content"])
        calls = [c for c in parsed.calls if isinstance(c, ToolCall)]
        if not calls:
            out.append(message)
            continue
        out.append(
            {
                "role": "assistant",
                "content": parsed.content,
                "tool_calls": [
                    {"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in calls
                ],
            }
        )
    return out


def differences(episode: Episode, theirs: Sequence[int], tokenizer) -> list[Difference]:
    """Spans where ``theirs`` (e.g. ``rerendered_ids``) differs from the episode's ids."""
    ours = [*episode.prompt_ids, *episode.response_ids]
    labels = ["prompt"] * len(episode.prompt_ids) + [s.name.lower() for s in episode.sources]
    matcher = difflib.SequenceMatcher(a=ours, b=list(theirs), autojunk=False)
    out = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        a, b = tuple(ours[i1:i2]), tuple(theirs[j1:j2])
        # an insertion is labelled by the token it goes before (or "end")
        sources = labels[i1:i2] or ([labels[i1]] if i1 < len(ours) else ["end"])
        out.append(Difference(i1, a, b, tuple(sources), _kind(a, b, tokenizer)))
    return out


def _kind(ours: tuple[int, ...], theirs: tuple[int, ...], tokenizer) -> str:
    if any(i >= len(tokenizer) for i in ours):
        return "unknown ids"
    special = set(tokenizer.all_special_ids)
    if any(i in special for i in ours) and tokenizer.decode(
        list(ours), skip_special_tokens=True
    ) == tokenizer.decode(list(theirs), skip_special_tokens=True):
        return "special tokens"
    if tokenizer.decode(list(ours)) == tokenizer.decode(list(theirs)):
        return "same text, other ids"
    return "text differs"
