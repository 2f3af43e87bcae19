"""The rollout: sampling responses with the actor's weights.

On-policy in one process the rollout holds the *same* module as the actor, so there is
nothing to sync; otherwise it holds a copy of its own that the runtime's weight sync refreshes.
"""

from __future__ import annotations

import torch

from placerl.models.tokens import end_token_ids
from placerl.rollout.sampling import SamplingParams, generate
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

    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        params: SamplingParams | None = None,
        uniforms: torch.Tensor | None = None,
    ) -> Batch:
        """Sample one response per prompt. ``uniforms`` (B, max_new_tokens) is the rows'
        sampling noise when a runtime drew it for the whole batch (data-parallel workers);
        without it the noise comes from this worker's seeded generator."""
        return generate(
            self.model,
            prompt_ids,
            prompt_mask,
            params or self.params,
            eos_token_id=self.end_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            generator=self.generator,
            tokenizer=self.tokenizer,
            uniforms=uniforms,
        )

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
        return self.engine.generate(prompt_ids, prompt_mask, params, row_seeds(uniforms))

    def load_named_weights(self, named) -> None:
        self.engine.load_weights(named)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
