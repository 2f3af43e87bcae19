"""A ``TurnSampler`` that answers by rule instead of by model: the episode runner's logic
(limits, bridges, failures, scheduling) tested without depending on what a random model says."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from placerl.rollout.continuation import Context, TurnRequest, TurnResult
from placerl.tasks.tool_arithmetic import call_text

Policy = Callable[[str], "str | list[int]"]


class ScriptedTurns:
    """Replies ``policy(text so far)`` (a string, tokenised, or token ids as they are) then
    the end token; cut at the request's limit. Log-probs are -0.1, -0.2, ... per token."""

    def __init__(self, tokenizer, policy: Policy, end_id: int):
        self.tokenizer, self.policy, self.end_id = tokenizer, policy, end_id
        self.batches: list[int] = []  # the size of each sampling call

    def sample(self, requests: Sequence[TurnRequest]) -> list[TurnResult]:
        self.batches.append(len(requests))
        return [self._one(r) for r in requests]

    def _one(self, request: TurnRequest) -> TurnResult:
        full = (*(request.context.ids if request.context else ()), *request.ids)
        reply = self.policy(self.tokenizer.decode(list(full)))
        ids = reply if isinstance(reply, list) else self.encode(reply)
        ids = [*ids, self.end_id]
        ended = len(ids) <= request.max_new_tokens
        ids = ids[: request.max_new_tokens]
        log_probs = tuple(-0.1 * (k + 1) for k in range(len(ids)))
        context = Context((*full, *ids), None) if ended and request.keep else None
        return TurnResult(tuple(ids), log_probs, ended, context)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def calculator_oracle(text: str) -> str:
    """The right policy for the arithmetic task: call calc on the question, then answer with
    the tool's result."""
    results = re.findall(r"tool: (.*)\n", text)
    if results:
        return results[-1]
    return call_text(re.search(r"user: (.*)=", text).group(1))
