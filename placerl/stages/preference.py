"""The offline preference stage (``stage: dpo``): DPO, SLiC or IPO on fixed prompt/chosen/rejected
pairs, against a frozen reference model.

Data is tokenized and checked once, up front: a prompt with no room for a response is an error;
a pair longer than ``data.max_len`` has its responses cut (``preference.over_length:
truncate``, the count printed at start and logged per step as ``data/truncated``) or is an
error (``error``); a pair whose two responses are the same tokens (after any cut) is an error
— it would teach nothing. Every error names the file and the row.

Reference log-probs (``preference.reference``):

- ``cached``: computed per example the first time training meets it (the examples of a batch
  that have no value yet go through the reference together), then kept. The cache is part of
  the checkpoint, and the data order is deterministic, so a resumed run computes exactly what
  an uninterrupted one would. Once every example has a value (after one epoch) and the held-out
  pairs too, the reference model is freed.
- ``online``: the reference scores the whole batch at every step.

Held-out pairs (``data.eval``, or the built-in task's eval split) always get their reference
log-probs once, at the first evaluation.

On Ray workers (``placement.strategy: flatten``) the reference lives with the trained model on
every rank (with LoRA it is that model, its adapter disabled), and the reference sums a batch
lacks are computed by the rank its examples were dealt to, micro-batch by micro-batch, before
the update; the controller keeps the cache and the data order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from placerl.algos.offline import Share
from placerl.config.schema import BUILTIN, RunConfig
from placerl.data.collate import encode_pairs
from placerl.data.examples import EncodedPair
from placerl.data.stream import PromptSet
from placerl.errors import UserError
from placerl.evaluation import Evaluation, evaluate_policy
from placerl.stages.heldout import preference_prompts
from placerl.stages.offline import OfflineStage, Trained
from placerl.stages.sources import (
    eval_source,
    model_path,
    preference_triples,
    prompt_set,
    tokenizer_and_policy,
)

log = logging.getLogger(__name__)


def encode_preference_data(
    triples: list[tuple[str, str, str]], tokenizer, max_len: int, over_length: str, source: str
) -> list[EncodedPair]:
    """Token ids of every pair, checked (see the module docstring); ``source`` names the data."""
    try:
        prompts, chosen, rejected = encode_pairs(tokenizer, triples, max_len)
    except UserError as err:  # name the file the row came from
        raise UserError(err.message, where=f"{source} {err.where}") from None
    pairs, cut = [], []
    for row, (prompt, good, bad) in enumerate(zip(prompts, chosen, rejected, strict=True)):
        room = max_len - len(prompt)
        longest = len(prompt) + max(len(good), len(bad))
        if longest > max_len:
            if over_length == "error":
                raise UserError(
                    f"prompt+response is {longest} tokens, longer than data.max_len={max_len}; "
                    "raise data.max_len, shorten or drop the row, or set "
                    "preference.over_length=truncate to cut responses to fit",
                    where=f"{source} row {row}",
                )
            cut.append(row)
        over = longest > max_len
        pair = EncodedPair(prompt, good[:room], bad[:room], truncated=over, uncut=longest)
        if pair.chosen == pair.rejected:
            within = f" within data.max_len={max_len} tokens" if longest > max_len else ""
            raise UserError(
                f"'chosen' and 'rejected' are the same tokens{within}; a preference pair needs "
                "two different responses" + (" (raise data.max_len)" if within else ""),
                where=f"{source} row {row}",
            )
        pairs.append(pair)
    if cut:
        shown = ", ".join(map(str, cut[:8])) + (", ..." if len(cut) > 8 else "")
        log.warning(
            "%s: %d of %d pairs are longer than data.max_len=%d tokens; their responses are cut "
            "to fit (rows %s). Set preference.over_length=error to refuse them instead.",
            source,
            len(cut),
            len(pairs),
            max_len,
            shown,
        )
    return pairs


class ReferenceCache:
    """Reference log-probs [chosen, rejected] per training example, filled on first sight."""

    def __init__(self, size: int):
        self.values = torch.zeros(size, 2)  # (N, 2) float32 Σ log π_ref
        self.known = torch.zeros(size, dtype=torch.bool)  # (N,)

    def missing(self, indices: list[int]) -> list[int]:
        """The indices without a value, each once, in order of first appearance."""
        return [i for i in dict.fromkeys(indices) if not self.known[i]]

    def put(self, indices: list[int], values: torch.Tensor) -> None:
        self.values[indices] = values.float().cpu()
        self.known[indices] = True

    def get(self, indices: list[int]) -> torch.Tensor:
        return self.values[indices]

    @property
    def complete(self) -> bool:
        return bool(self.known.all())

    def state_dict(self) -> dict:
        return {"values": self.values.clone(), "known": self.known.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["values"].shape != self.values.shape:
            raise UserError(
                f"the checkpoint's reference cache has {state['values'].shape[0]} examples but "
                f"the training data has {self.values.shape[0]}; resume with the same data",
                where="data.train",
            )
        self.values, self.known = state["values"].clone(), state["known"].clone()


@dataclass(frozen=True)
class PreferenceEvaluator:
    """Held-out loss, preference accuracy and implicit rewards on the eval pairs (their
    reference sums computed once, kept by the trainer); greedy samples (and exact match,
    built-in data) on their prompts. Runs where the trained model is."""

    pairs: list[EncodedPair]
    prompts: PromptSet | None
    precision: str
    max_new_tokens: int
    stop_strings: tuple[str, ...]
    num_samples: int

    def __call__(self, trainer) -> tuple[dict, list]:
        metrics = Evaluation()
        if self.pairs:
            if trainer.eval_reference is None:
                trainer.eval_reference = trainer.algo.reference_log_probs(
                    trainer.reference, self.pairs
                )
            metrics |= trainer.algo.evaluate(self.pairs, trainer.eval_reference)
        if self.prompts is not None:
            policy = evaluate_policy(
                trainer.model,
                trainer.tokenizer,
                self.prompts,
                max_new_tokens=self.max_new_tokens,
                stop_strings=self.stop_strings,
                num_samples=self.num_samples,
                precision=self.precision,
            )
            metrics.merge(policy)
        return dict(metrics), metrics.samples


class OfflinePreferenceStage(OfflineStage):
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        tokenizer, model = tokenizer_and_policy(cfg)
        self.tokenizer = tokenizer
        self.pairs = self._encode(preference_triples(cfg, tokenizer, cfg.data.train), "train")
        eval_path = eval_source(cfg)
        self.eval_pairs: list[EncodedPair] = []
        triples: list[tuple[str, str, str]] = []
        if eval_path:
            triples = preference_triples(cfg, tokenizer, eval_path, "eval", n=cfg.data.num_eval)
            self.eval_pairs = self._encode(triples[: cfg.data.num_eval], "eval")
        # built-in: the task's prompts with answers (accuracy); a file: a few of its prompts
        eval_prompts = (
            prompt_set(cfg, tokenizer, BUILTIN, "eval")
            if eval_path == BUILTIN
            else preference_prompts(cfg, tokenizer, triples)
        )
        evaluator = None
        if self.eval_pairs or eval_prompts is not None:
            evaluator = PreferenceEvaluator(
                self.eval_pairs,
                eval_prompts,
                cfg.model.precision,
                cfg.rollout.max_new_tokens,
                tuple(cfg.rollout.stop_strings),
                cfg.trainer.log_samples,
            )
        cached = cfg.preference.reference == "cached"
        self.cache = ReferenceCache(len(self.pairs)) if cached else None
        self.evaluated = False  # the held-out pairs have their reference sums
        trained = Trained("policy", model)
        super().__init__(cfg, tokenizer, trained, self.pairs, evaluator, model_path(cfg))

    def _encode(self, triples, split: str) -> list[EncodedPair]:
        path = self.cfg.data.train if split == "train" else eval_source(self.cfg)
        source = f"builtin:{split}" if path == BUILTIN else str(path)
        return encode_preference_data(
            triples,
            self.tokenizer,
            self.cfg.data.max_len,
            self.cfg.preference.over_length,
            source,
        )

    def before_update(self, indices: list[int], shares: list[Share], timer) -> None:
        """Every share gets its (n, 2) reference sums: from the cache, else computed by its
        rank first (``reference`` phase), then cached (``preference.reference: cached``)."""
        values = torch.full((len(indices), 2), float("nan"))
        if self.cache is not None:
            known = self.cache.known[indices]
            values[known] = self.cache.get(indices)[known]
        missing = bool(torch.isnan(values[:, 0]).any())
        for share in shares:
            share.reference = values[share.positions or [0]].clone()
            share.reference_pass = missing
        if missing:
            with timer.phase("reference"):
                computed = self.runtime.reference(shares)
            for share, rows in zip(shares, computed, strict=True):
                if rows is not None and share.positions:
                    values[share.positions] = rows
            if self.cache is not None:
                lacking = [p for p, i in enumerate(indices) if not self.cache.known[i]]
                self.cache.put([indices[p] for p in lacking], values[lacking])
            for share in shares:
                share.reference = values[share.positions or [0]].clone()
                share.reference_pass = False
        self._free_reference_when_done()

    def _free_reference_when_done(self) -> None:
        done_eval = self.evaluated or not self.eval_pairs
        if self.cache is not None and self.cache.complete and done_eval:
            self.runtime.free_reference()

    def evaluate(self) -> Evaluation:
        result = super().evaluate()
        self.evaluated = True
        self._free_reference_when_done()
        return result

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.cache is not None and "reference_cache" in state:
            self.cache.load_state_dict(state["reference_cache"])
            self._free_reference_when_done()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.cache is not None:
            state["reference_cache"] = self.cache.state_dict()
        return state

    # one process: the trainer's pieces, for tests and benchmarks
    @property
    def algo(self):
        return self.runtime.trainer.algo

    @property
    def reference(self):
        return self.runtime.trainer.reference

    @reference.setter
    def reference(self, model) -> None:
        self.runtime.trainer.reference = model
