"""A batch of episodes for training: what a rollout role returns instead of single responses.

``episode_batch`` runs one episode per dataset row with any ``TurnSampler`` (placerl's
sampler, vLLM), scores them where they ran (``EpisodeSetup.score``: the environment's rewards,
or a reward function over each whole conversation), and returns placerl's one batch layout
(episodes/batch.py) with three kinds of extra per-row fields: ``Field.EPISODE_REWARD`` (what
the reward role reads), the episode counts of ``metrics.STAT_FIELDS`` (what the pipeline turns
into ``env/…`` metrics) and ``Field.STOP_REASON`` (``response/clipped_ratio``). Every field is
a tensor with the sample as its first dimension, so the batch splits over workers, gathers,
pads and checkpoints like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from placerl.data.stream import PromptBatch
from placerl.rollout.envs.protocol import EnvFactory, EpisodeLimits
from placerl.rollout.episodes.batch import episode_stop_reasons, episodes_to_batch
from placerl.rollout.episodes.metrics import stat_fields
from placerl.rollout.episodes.record import Episode
from placerl.rollout.episodes.runner import TurnSampler, run_episodes
from placerl.types import Batch, Field

# scores finished episodes (one float each); None: a reward model scores the tokens instead
EpisodeScore = Callable[[Sequence[Episode]], Sequence[float]]


@dataclass(frozen=True)
class EpisodeSetup:
    """Everything a rollout needs to run episodes, built once from the config."""

    factory: EnvFactory
    limits: EpisodeLimits
    max_new_tokens: int  # per model turn
    score: EpisodeScore | None = None
    gather_s: float = 0.005
    where: str = "env.factory"  # the config key errors of the factory name


def episode_rows(prompts: PromptBatch) -> list[dict[str, Any]]:
    """Each prompt as the dataset gave it (``prompt``) with its row's other columns: what an
    environment's ``reset(row)`` and the reward read."""
    given = prompts.as_given()
    return [
        {"prompt": prompt, **{k: v[i] for k, v in prompts.columns.items()}}
        for i, prompt in enumerate(given)
    ]


def run_setup(
    sampler: TurnSampler,
    setup: EpisodeSetup,
    rows: Sequence[Mapping[str, Any]],
    tokenizer,
    uniforms: Tensor | None,
    context: int | None = None,
) -> list[Episode]:
    """The rows' episodes, run to their ends (``uniforms``: see ``runner.draw_uniforms``)."""
    return run_episodes(
        sampler,
        setup.factory,
        rows,
        tokenizer,
        setup.limits,
        max_new_tokens=setup.max_new_tokens,
        uniforms=uniforms,
        gather_s=setup.gather_s,
        where=setup.where,
        context=context,
    )


def episode_batch(
    sampler: TurnSampler,
    setup: EpisodeSetup,
    rows: Sequence[Mapping[str, Any]],
    tokenizer,
    uniforms: Tensor | None,
    context: int | None = None,
    end_token_ids: Sequence[int] | None = None,
) -> Batch:
    """The rows' episodes as one training batch (module doc); with ``end_token_ids``, each
    episode's stop reason (``Field.STOP_REASON``: why its last model turn stopped)."""
    episodes = run_setup(sampler, setup, rows, tokenizer, uniforms, context)
    batch = episodes_to_batch(episodes, tokenizer.pad_token_id)
    if end_token_ids is not None:
        batch[Field.STOP_REASON] = episode_stop_reasons(episodes, end_token_ids)
    if setup.score is not None:
        scores = [float(s) for s in setup.score(episodes)]
        batch[Field.EPISODE_REWARD] = torch.tensor(scores, dtype=torch.float32)
    for key, value in stat_fields(episodes).items():
        batch[key] = value
    return batch
