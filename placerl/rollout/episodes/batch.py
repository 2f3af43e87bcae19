"""Finished episodes in placerl's one batch layout (placerl/types.py).

    [ left-padded first prompt (P) | right-padded response (R) ]

The "response" is everything after the first prompt: model turns and the observation tokens
between them, in the order the model saw them. RESPONSE_MASK is 1 on model tokens only (the
loss, KL, advantages, entropy and GRPO's token counts all read it), ATTENTION_MASK covers
observation tokens too (they are context: every forward sees them), OLD_LOG_PROBS are the
sampler's on model tokens and 0 elsewhere. Position ids follow ATTENTION_MASK
(``cumsum − 1``), so a recomputed forward sees each token where the sampler did. Every
episode has at least one model token (a turn samples at least one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDict
from torch import Tensor

from placerl.data.collate import left_pad, right_pad
from placerl.rollout.episodes.record import Episode, Source
from placerl.rollout.stop_reasons import END_TOKEN, LENGTH, STOP_STRING
from placerl.types import Field


def episodes_to_batch(episodes: Sequence[Episode], pad_token_id: int) -> TensorDict:
    prompt_ids, prompt_mask = left_pad([list(e.prompt_ids) for e in episodes], pad_token_id)
    response, attended = right_pad([e.response_ids for e in episodes], pad_token_id)
    model = torch.zeros_like(response)
    log_probs = torch.zeros(response.shape, dtype=torch.float32)
    for row, episode in enumerate(episodes):
        sources = torch.tensor([int(s) for s in episode.sources], dtype=torch.long)
        n = sources.numel()
        model[row, :n] = (sources == int(Source.MODEL)).long()
        log_probs[row, :n] = torch.tensor(episode.log_probs, dtype=torch.float32)
    return TensorDict(
        {
            Field.PROMPT_IDS: prompt_ids,
            Field.PROMPT_MASK: prompt_mask,
            Field.RESPONSE_IDS: response,
            Field.RESPONSE_MASK: model,
            Field.INPUT_IDS: torch.cat([prompt_ids, response], dim=1),
            Field.ATTENTION_MASK: torch.cat([prompt_mask, attended], dim=1),
            Field.OLD_LOG_PROBS: log_probs,
        },
        batch_size=[len(episodes)],
    )


def episode_stop_reasons(episodes: Sequence[Episode], end_token_ids: Sequence[int]) -> Tensor:
    """(E,) ``Field.STOP_REASON`` codes (``rollout/stop_reasons.py``) of multi-turn episodes:
    why each one's last model turn stopped (an episode always ends after a model turn). A turn
    cut at its token limit (``rollout.max_new_tokens``, or what was left of ``env.max_tokens``)
    is LENGTH; one that ended on an end token END_TOKEN; any other that ended by itself, at a
    stop string, STOP_STRING. This is what ``response/clipped_ratio`` counts for episodes."""
    ends, codes = {int(t) for t in end_token_ids}, []
    for episode in episodes:
        last = next(s for s in reversed(episode.segments) if s.source is Source.MODEL)
        if episode.turns and not episode.turns[-1].ended:
            codes.append(LENGTH)
        else:
            codes.append(END_TOKEN if last.ids and last.ids[-1] in ends else STOP_STRING)
    return torch.tensor(codes, dtype=torch.long)
