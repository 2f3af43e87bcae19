"""A trained policy ready to answer: found from a run or model directory, prompts rendered as
in training, responses ended where sampling ends them. What ``generate`` and ``chat`` share.

- ``find_policy``: a model directory (``config.json``), a LoRA adapter directory
  (``adapter_config.json``: its base, the adapter merged, as every stage loads it), or a run
  directory: its exported ``policy/``, else the policy of its newest checkpoint (a run that
  was stopped early).
- Prompts: with the tokenizer's chat template (one user turn, an optional system turn, the
  generation prompt), unless ``raw``; then tokens exactly as training encodes prompts
  (``data/collate.py::encode_prompts``: BOS once).
- Responses end at any end token of the model (tokenizer EOS, the template's end of turn,
  ``generation_config``'s list: ``models/tokens.py``), as in training and ``model.generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from placerl.errors import UserError

ROLE_DIRS = ("policy", "policy_merged")


def find_policy(path: str | Path) -> tuple[Path, str]:
    """The policy directory to load for ``path`` and a note on how it was found."""
    from placerl.checkpoint import latest_checkpoint
    from placerl.models.paths import require_dir

    path = require_dir(path, "run or model")
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return path, ""
    for name in ROLE_DIRS:
        if (path / name).is_dir():
            return path / name, f"the run's {name}/"
    newest = latest_checkpoint(path / "checkpoints")
    if newest is not None and (newest / "policy").is_dir():
        return newest / "policy", f"the run's newest checkpoint ({newest.name}; no policy/ yet)"
    raise UserError(
        "no policy here: expected a model directory (config.json), a LoRA adapter directory "
        "(adapter_config.json) or a run directory with policy/ or checkpoints/step_*/policy/ "
        "(a reward-model run has reward_model/ instead)",
        where=str(path),
    )


@dataclass(frozen=True)
class Options:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    raw: bool = False  # the prompt as given, without the chat template
    system: str | None = None
    device: str = "auto"


class PolicySession:
    """One loaded policy and its tokenizer; ``reply`` answers a prompt or a conversation."""

    def __init__(self, path: str | Path, options: Options):
        from placerl.models.device import resolve_device
        from placerl.models.loading import load_policy, load_tokenizer
        from placerl.models.tokens import end_token_ids

        self.path, self.found = find_policy(path)
        self.options = options
        self.tokenizer = load_tokenizer(self.path)
        self.model = load_policy(self.path).to(resolve_device(options.device)).eval()
        self.end_ids = end_token_ids(self.tokenizer, self.model)
        self.generator = torch.Generator().manual_seed(options.seed)
        self.chat = not options.raw and bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, conversation: list[dict] | str) -> str:
        """The prompt text the model reads: a conversation through the chat template with
        its generation prompt, or the text as given (``raw``, or no template)."""
        from placerl.data.formats import to_prompt_text

        if isinstance(conversation, str):
            if not self.chat:
                return conversation
            conversation = [{"role": "user", "content": conversation}]
        if self.options.system:
            conversation = [{"role": "system", "content": self.options.system}, *conversation]
        return to_prompt_text({"prompt": conversation}, self.tokenizer, where="prompt")

    def reply(self, conversation: list[dict] | str) -> str:
        from placerl.data.collate import encode_prompts, left_pad
        from placerl.rollout.sampling import SamplingParams, generate
        from placerl.types import Field

        ids = encode_prompts(self.tokenizer, [self.render(conversation)], max_len=10**9)
        self._check_fits(len(ids[0]))
        prompt_ids, prompt_mask = left_pad(ids, self.tokenizer.pad_token_id)
        greedy = self.options.temperature == 0
        params = SamplingParams(
            max_new_tokens=self.options.max_new_tokens,
            temperature=1.0 if greedy else self.options.temperature,
            top_p=self.options.top_p,
            greedy=greedy,
        )
        batch = generate(
            self.model,
            prompt_ids,
            prompt_mask,
            params,
            eos_token_id=self.end_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            generator=self.generator,
            tokenizer=self.tokenizer,
        )
        response = batch[Field.RESPONSE_IDS][0][batch[Field.RESPONSE_MASK][0].bool()]
        return self.tokenizer.decode(response.tolist(), skip_special_tokens=True)

    def _check_fits(self, prompt_len: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and prompt_len + self.options.max_new_tokens > limit:
            raise UserError(
                f"the prompt ({prompt_len} tokens) plus --max-new-tokens "
                f"{self.options.max_new_tokens} is beyond the model's context of {limit} "
                "tokens; lower --max-new-tokens or shorten the prompt",
                where="--max-new-tokens",
            )
