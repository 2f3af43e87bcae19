"""Why each sampled response stopped: an end token, a stop string, or the token budget.

The sampler's batch says this only implicitly (the last valid token, the response length),
so the rollout role names it once per row, as ``Field.STOP_REASON`` (B,) int64, for the step
metrics (``response/clipped_ratio``: the share of responses cut at ``max_new_tokens``, the
number veRL calls ``response_length/clip_ratio``; ``response/end_token_ratio``) and for the
evaluation samples in ``samples.jsonl`` (``stop``: vLLM's and OpenAI's ``finish_reason``,
with the end token and the stop string told apart).

The rule, from what the sampler does (``rollout/sampling.py``; vLLM stops the same way): a
row whose last token is an end token stopped there; otherwise a row whose text contains a
stop string stopped at it (the check runs after every token, so only the last one can have
completed it); otherwise it ran out of tokens — its length is the budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from placerl.types import Batch, Field

END_TOKEN, STOP_STRING, LENGTH = 0, 1, 2
NAMES = ("end_token", "stop_string", "length")  # by code


def stop_reasons(
    response_ids: Tensor,  # (B, R) right-padded sampled tokens
    response_mask: Tensor,  # (B, R) 1 on valid tokens (end token included)
    end_token_ids: Sequence[int],
    stop_strings: Sequence[str] = (),
    tokenizer=None,
) -> Tensor:
    """(B,) int64 codes: END_TOKEN, STOP_STRING or LENGTH (module doc). A row with no valid
    token counts as LENGTH (a budget of zero tokens left nothing to end)."""
    response_ids, valid = response_ids.cpu(), response_mask.cpu().bool()
    reasons = torch.full((valid.shape[0],), LENGTH, dtype=torch.long)
    if valid.shape[1] == 0:
        return reasons
    positions = torch.arange(valid.shape[1])
    last = torch.where(valid, positions, -1).amax(dim=1)  # (B,) -1 when empty
    last_token = response_ids.gather(1, last.clamp(min=0).unsqueeze(1)).squeeze(1)
    if stop_strings and tokenizer is not None:
        texts = tokenizer.batch_decode([ids[m].tolist() for ids, m in zip(response_ids, valid)])
        hit = torch.tensor([any(s in t for s in stop_strings) for t in texts], dtype=torch.bool)
        reasons[hit] = STOP_STRING
    ends = torch.as_tensor(list(end_token_ids), dtype=response_ids.dtype)
    reasons[torch.isin(last_token, ends) & (last >= 0)] = END_TOKEN
    return reasons


def with_stop_reasons(
    batch: Batch, end_token_ids: Sequence[int], stop_strings: Sequence[str] = (), tokenizer=None
) -> Batch:
    """``batch`` with ``Field.STOP_REASON`` set (on the batch's device)."""
    reasons = stop_reasons(
        batch[Field.RESPONSE_IDS],
        batch[Field.RESPONSE_MASK],
        end_token_ids,
        stop_strings,
        tokenizer,
    )
    batch[Field.STOP_REASON] = reasons.to(batch[Field.RESPONSE_IDS].device)
    return batch


def stop_metrics(reasons: Tensor) -> dict[str, float]:
    """Shares of a batch's responses by why they stopped: ``response/clipped_ratio`` (cut at
    ``max_new_tokens``), ``response/end_token_ratio``, ``response/stop_string_ratio``."""
    n = max(1, reasons.numel())
    return {
        "response/clipped_ratio": float((reasons == LENGTH).sum()) / n,
        "response/end_token_ratio": float((reasons == END_TOKEN).sum()) / n,
        "response/stop_string_ratio": float((reasons == STOP_STRING).sum()) / n,
    }


def reason_names(reasons: Tensor) -> list[str]:
    """The codes as names (``samples.jsonl``'s ``stop``)."""
    return [NAMES[int(code)] for code in reasons.tolist()]


__all__ = [
    "END_TOKEN",
    "LENGTH",
    "NAMES",
    "STOP_STRING",
    "reason_names",
    "stop_metrics",
    "stop_reasons",
    "with_stop_reasons",
]
