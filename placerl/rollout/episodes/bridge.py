"""Observation tokens, tokenised alone: the "bridge" between two model turns.

After the model ends a turn with its end token (``<|im_end|>``), the next turn's context is
what the chat template would write from there: the rest of the assistant turn's closing
(ChatML's ``"\\n"``), the observation turn(s) (``<|im_start|>user\\n<tool_response>…``), and
the next generation prompt (``<|im_start|>assistant\\n``). That text is found by rendering a
fixed two-turn conversation with and without the observation (TRL's approach, with the
closing kept) and tokenised on its own, then appended after the model's ids. The
conversation is never rendered and tokenised as a whole, which would change the model's own
ids (BPE merges across turn boundaries, a template's reformatting of earlier turns: see
episodes/retokenize.py).

A turn that ended on a stop string instead of an end token gets the template's whole closing
(end token included) as observation tokens: context the model did not write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from placerl.data.collate import encode_prompts
from placerl.errors import UserError
from placerl.rollout.envs.protocol import Message

_MARKER = "PLACERLTURNMARKER"
_DUMMY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARKER}]


class ChatBridge:
    """The token ids of first prompts and of observations for one tokenizer and tool set."""

    def __init__(self, tokenizer, tool_schemas: Sequence[dict[str, Any]] = ()):
        self.tokenizer = tokenizer
        self.tools = list(tool_schemas) or None
        self.closed = self._render(_DUMMY, generation=False)  # ends with the assistant's close
        if _MARKER not in self.closed:
            raise UserError(
                "the chat template does not render an assistant message's content as given; "
                "multi-turn episodes need it to",
                where="tokenizer.chat_template",
            )
        self.close = self.closed[self.closed.rindex(_MARKER) + len(_MARKER) :]
        close_ids = tokenizer(self.close, add_special_tokens=False)["input_ids"]
        self.close_end = close_ids[0] if close_ids else None  # the turn's end token, if any
        self.close_after_end = self.close
        if close_ids:
            end_text = tokenizer.decode(close_ids[:1])
            if self.close.startswith(end_text):
                self.close_after_end = self.close[len(end_text) :]

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The first prompt: the messages with the tools and the generation prompt, tokenised
        as placerl tokenises every prompt (BOS added when the tokenizer has one)."""
        text = self._render(list(messages), generation=True)
        return encode_prompts(self.tokenizer, [text], max_len=10**9)[0]

    def observation_ids(self, observation: Sequence[Message], last_token: int) -> list[int]:
        """The tokens after a model turn whose last token is ``last_token``: the rest of the
        turn's closing, the observation messages, the next generation prompt."""
        return self.tokenizer(
            self.observation_text(observation, last_token), add_special_tokens=False
        )["input_ids"]

    def observation_text(self, observation: Sequence[Message], last_token: int) -> str:
        full = self._render([*_DUMMY, *observation], generation=True)
        if not full.startswith(self.closed):
            raise UserError(
                "the chat template renders the earlier turns differently once an observation "
                "follows them, so observation tokens cannot be appended to the model's own",
                where="tokenizer.chat_template",
            )
        close = self.close_after_end if last_token == self.close_end else self.close
        return close + full[len(self.closed) :]

    def _render(self, messages: list[Message], generation: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=self.tools, tokenize=False, add_generation_prompt=generation
        )
