"""The rollout: sampling responses — or whole episodes — with the actor's weights.

On-policy in one process the rollout holds the *same* module as the actor, so there is
nothing to sync; otherwise it holds a copy of its own that the runtime's weight sync refreshes.

The pipeline calls ``sample(prompts)``: a single-turn rollout samples one response per prompt
(``generate``), an episode rollout (``env:`` in the config) runs one episode per prompt row
(``episodes``) with placerl's sampler or an engine, turn by turn (rollout/episodes/).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from placerl.config.preflight import positions
from placerl.data.stream import PromptBatch
from placerl.models.tokens import end_token_ids
from placerl.rollout.episodes.engines import PlacerlTurns, VLLMTurns
from placerl.rollout.episodes.runner import draw_uniforms as draw_episode_uniforms
from placerl.rollout.episodes.sampling import EpisodeSetup, episode_batch, episode_rows
from placerl.rollout.sampling import SamplingParams, generate
from placerl.rollout.stop_reasons import with_stop_reasons
from placerl.types import Batch


class RolloutWorker:
    def __init__(self, model, tokenizer, params: SamplingParams, *, seed: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.params = params
        self.generator = torch.Generator().manual_seed(seed)
        # A response ends at the tokenizer's EOS, the chat template's turn end, or any end
        # token of the model's generation_config (a list in chat models), as in model.generate.
        self.end_ids = end_token_ids(tokenizer, model)

    def sample(self, prompts: PromptBatch) -> Batch:
        return self.generate(prompts.ids, prompts.mask)

    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        params: SamplingParams | None = None,
        uniforms: torch.Tensor | None = None,
    ) -> Batch:
        """Sample one response per prompt. ``uniforms`` (B, max_new_tokens) is the rows'
        sampling noise when a runtime drew it for the whole batch (data-parallel workers);
        without it the noise comes from this worker's seeded generator. Each row's stop
        reason comes with it (``Field.STOP_REASON``)."""
        params = params or self.params
        batch = generate(
            self.model,
            prompt_ids,
            prompt_mask,
            params,
            eos_token_id=self.end_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            generator=self.generator,
            tokenizer=self.tokenizer,
            uniforms=uniforms,
        )
        return with_stop_reasons(batch, self.end_ids, params.stop_strings, self.tokenizer)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class EngineRolloutWorker:
    """The rollout on an inference engine (vLLM) that holds its own copy of the weights.

    Same methods as ``RolloutWorker``; ``load_named_weights`` goes into the engine in place.
    The engine's log-probs are the behaviour policy μ: the pipeline has the trainer recompute
    π_old (``recompute_log_probs: always``) and corrects with truncated IS weights.
    """

    model: torch.nn.Module | None = None  # on a Ray worker: the HF copy that receives syncs

    def __init__(self, engine, params: SamplingParams, *, seed: int = 0):
        self.engine = engine
        self.params = params
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, prompts: PromptBatch) -> Batch:
        return self.generate(prompts.ids, prompts.mask)

    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        params: SamplingParams | None = None,
        uniforms: torch.Tensor | None = None,
    ) -> Batch:
        from placerl.rollout.sampling import draw_uniforms
        from placerl.rollout.vllm_engine import row_seeds

        params = params or self.params
        if uniforms is None:  # drawn as placerl's sampler and the Ray handles draw them
            uniforms = draw_uniforms(prompt_ids.shape[0], params, self.generator)
        batch = self.engine.generate(prompt_ids, prompt_mask, params, row_seeds(uniforms))
        engine = self.engine
        return with_stop_reasons(batch, engine.end_token_ids, params.stop_strings, engine.tokenizer)

    def load_named_weights(self, named) -> None:
        self.engine.load_weights(named)

    def close(self) -> None:
        """Shut the engine down (the runtime's close calls it)."""
        self.engine.close()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class _Episodes:
    """What both episode rollouts share: rows in, a batch of scored episodes out, with noise
    from this worker's generator unless a runtime drew it for the whole batch."""

    tokenizer: Any
    params: SamplingParams
    setup: EpisodeSetup
    generator: torch.Generator
    end_ids: Sequence[int]  # the stop reasons' end tokens

    def sample(self, prompts: PromptBatch) -> Batch:
        return self.episodes(episode_rows(prompts))

    def episodes(
        self, rows: Sequence[Mapping[str, Any]], uniforms: torch.Tensor | None = None
    ) -> Batch:
        """One episode per row. ``uniforms`` (E, max_turns, max_new_tokens): the episodes'
        noise when a runtime drew it for the whole batch (data-parallel workers)."""
        if uniforms is None:
            limits, n = self.setup.limits, self.params.max_new_tokens
            uniforms = draw_episode_uniforms(len(rows), limits, n, self.generator)
        turns, context = self._turns()
        noise, ends = uniforms.cpu(), self.end_ids
        return episode_batch(turns, self.setup, rows, self.tokenizer, noise, context, ends)

    def _turns(self):
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class EpisodeRolloutWorker(_Episodes):
    """Episodes sampled by placerl's sampler, each continuing from its kept KV cache."""

    def __init__(self, model, tokenizer, params: SamplingParams, setup: EpisodeSetup, *, seed=0):
        self.model, self.tokenizer, self.params, self.setup = model, tokenizer, params, setup
        self.generator = torch.Generator().manual_seed(seed)
        self.end_ids = end_token_ids(tokenizer, model)

    def _turns(self):
        turns = PlacerlTurns(
            self.model, self.params, self.end_ids, self.tokenizer.pad_token_id, self.tokenizer
        )
        return turns, positions(self.model.config.to_dict())


class EngineEpisodeRolloutWorker(_Episodes):
    """Episodes sampled by an inference engine (vLLM): one request per episode per turn, each
    sending the episode's whole token ids (its prefix cache spares recomputing them)."""

    model: torch.nn.Module | None = None  # on a Ray worker: the HF copy that receives syncs

    def __init__(self, engine, tokenizer, params: SamplingParams, setup: EpisodeSetup, *, seed=0):
        self.engine, self.tokenizer, self.params, self.setup = engine, tokenizer, params, setup
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def end_ids(self) -> list[int]:
        return self.engine.end_token_ids

    def _turns(self):
        return VLLMTurns(self.engine, self.params), self.engine.context

    def load_named_weights(self, named) -> None:
        self.engine.load_weights(named)
