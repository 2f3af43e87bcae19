"""Offline stages on fixed data: SFT on demonstrations, reward model on comparisons.

Both are ``OfflineStage``s (``stages/offline.py``): the examples are tokenized once here, the
trainer runs in this process or data-parallel on Ray workers, as ``placement`` says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from placerl.config.schema import RunConfig
from placerl.data.examples import SFTExample, encode_comparisons, encode_sft
from placerl.errors import UserError
from placerl.evaluation import Evaluation, evaluate_policy, reward_model_metrics, sft_loss
from placerl.models.loading import LoadOptions, load_tokenizer
from placerl.runtime.offline import offline_model
from placerl.stages.heldout import SFTHeldOut, sft_held_out
from placerl.stages.offline import OfflineStage, Trained
from placerl.stages.sources import (
    eval_source,
    model_path,
    preference_triples,
    sft_pairs,
    tokenizer_and_policy,
)

log = logging.getLogger(__name__)
_CHUNK = 1024  # examples tokenized at once (a bad row is named by its index)


def encode_sft_data(tokenizer, pairs: list[tuple[str, str]], cfg: RunConfig, source: str):
    """The demonstrations as token ids, encoded once. Says once, at start, how many do not
    fit ``data.max_len`` (their completions are cut, as DPO cuts pairs), or refuses them
    with ``data.over_length: error``; a prompt with no room for its completion names its row."""
    max_len, examples = cfg.data.max_len, []
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        rows = list(range(start, start + len(chunk)))
        try:
            examples += encode_sft(tokenizer, chunk, max_len, rows=rows)
        except UserError as err:
            raise UserError(err.message, where=f"{source} {err.where}") from None
    cut = [row for row, example in enumerate(examples) if example.truncated]
    if not cut:
        return examples
    if cfg.data.over_length == "error":
        raise UserError(
            f"prompt+completion is longer than data.max_len={max_len} tokens ({len(cut)} of "
            f"{len(pairs)} examples); raise data.max_len, shorten or drop the rows, or set "
            "data.over_length=truncate to cut completions to fit",
            where=f"{source} row {cut[0]}",
        )
    shown = ", ".join(map(str, cut[:8])) + (", ..." if len(cut) > 8 else "")
    log.warning(
        "%s: %d of %d examples are longer than data.max_len=%d tokens; their completions are "
        "cut to fit (rows %s). Set data.over_length=error to refuse them instead.",
        source,
        len(cut),
        len(pairs),
        max_len,
        shown,
    )
    return examples


@dataclass(frozen=True)
class SFTEvaluator:
    """Held-out ``eval/loss`` (SFT rows), ``eval/accuracy`` (rows with an answer) and a few
    greedy samples; see ``stages/heldout.py``. Runs where the trained model is."""

    held_out: SFTHeldOut
    max_len: int
    precision: str
    max_new_tokens: int
    stop_strings: tuple[str, ...]
    num_samples: int

    def __call__(self, trainer) -> tuple[dict, list]:
        model, tokenizer, result = trainer.model, trainer.tokenizer, Evaluation()
        if self.held_out.pairs:
            result["eval/loss"] = sft_loss(
                model,
                tokenizer,
                self.held_out.pairs,
                max_len=self.max_len,
                precision=self.precision,
            )
        if self.held_out.prompts is not None:
            policy = evaluate_policy(
                model,
                tokenizer,
                self.held_out.prompts,
                max_new_tokens=self.max_new_tokens,
                stop_strings=self.stop_strings,
                num_samples=self.num_samples,
                precision=self.precision,
            )
            result.merge(policy)
        return dict(result), result.samples


@dataclass(frozen=True)
class RewardModelEvaluator:
    """Held-out pairwise accuracy, Bradley–Terry loss, margin, and a few scored pairs."""

    triples: list[tuple[str, str, str]]
    num_samples: int

    def __call__(self, trainer) -> tuple[dict, list]:
        result = reward_model_metrics(trainer.algo, self.triples, self.num_samples)
        return dict(result), result.samples


class SFTStage(OfflineStage):
    def __init__(self, cfg: RunConfig):
        tokenizer, model = tokenizer_and_policy(cfg)
        pairs = sft_pairs(cfg, tokenizer, cfg.data.train)
        examples: list[SFTExample] = encode_sft_data(tokenizer, pairs, cfg, cfg.data.train)
        held_out = sft_held_out(cfg, tokenizer)
        evaluator = None
        if held_out is not None:
            evaluator = SFTEvaluator(
                held_out,
                cfg.data.max_len,
                cfg.model.precision,
                cfg.rollout.max_new_tokens,
                tuple(cfg.rollout.stop_strings),
                cfg.trainer.log_samples,
            )
        trained = Trained("policy", model)
        super().__init__(cfg, tokenizer, trained, examples, evaluator, model_path(cfg))


class RewardModelStage(OfflineStage):
    def __init__(self, cfg: RunConfig):
        path = model_path(cfg)
        tokenizer = load_tokenizer(cfg.model.tokenizer or path, LoadOptions.of(cfg.model))
        triples = preference_triples(cfg, tokenizer, cfg.data.train)
        examples = encode_comparisons(tokenizer, triples, cfg.data.max_len) if triples else []
        eval_path = eval_source(cfg)
        evaluator = None
        if eval_path:
            n = cfg.data.num_eval
            held = preference_triples(cfg, tokenizer, eval_path, "eval", n=n)[:n]
            evaluator = RewardModelEvaluator(held, cfg.trainer.log_samples) if held else None
        trained = Trained("reward_model", offline_model(cfg, path))
        super().__init__(cfg, tokenizer, trained, examples, evaluator, path)
