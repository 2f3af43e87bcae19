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
"""

from __future__ import annotations

import logging

import torch

from placerl.algos.dpo import EncodedPair, OfflinePreference, choose_layout
from placerl.config.schema import BUILTIN, RunConfig
from placerl.data.collate import encode_pairs, pad_token_id
from placerl.data.stream import IndexStream
from placerl.errors import UserError
from placerl.evaluation import Evaluation, evaluate_policy
from placerl.models.device import resolve_device
from placerl.models.micro_batches import micro_batching
from placerl.models.training import make_optimizer
from placerl.roles.build import reference_model
from placerl.stages.heldout import preference_prompts
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
        pair = EncodedPair(prompt, good[:room], bad[:room], truncated=longest > max_len)
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


def layout_models(model, reference) -> list:
    """The models whose mask handling decides the packing layout (``choose_layout``). A
    reference of the policy's class computes attention with the same code, so it is not
    checked again: in bf16 its sums would differ from the per-sequence ones by rounding, not
    by a mask it ignores, and the check would fall back to padding for nothing."""
    return [model] if type(reference) is type(model) else [model, reference]


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


class OfflinePreferenceStage:
    name = "dpo"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        pref = cfg.preference
        device = resolve_device(cfg.placement.device)
        self.tokenizer, self.model = tokenizer_and_policy(cfg)
        self.model.to(device)
        self.pairs = self._encode(preference_triples(cfg, self.tokenizer, cfg.data.train), "train")
        if not self.pairs:
            raise UserError("the preference dataset is empty", where="data.train")
        eval_path = eval_source(cfg)
        self.eval_pairs: list[EncodedPair] = []
        triples: list[tuple[str, str, str]] = []
        if eval_path:
            triples = preference_triples(
                cfg, self.tokenizer, eval_path, "eval", n=cfg.data.num_eval
            )
            self.eval_pairs = self._encode(triples[: cfg.data.num_eval], "eval")
        # built-in: the task's prompts with answers (accuracy); a file: a few of its prompts
        self.eval_prompts = (
            prompt_set(cfg, self.tokenizer, BUILTIN, "eval")
            if eval_path == BUILTIN
            else preference_prompts(cfg, self.tokenizer, triples)
        )
        self.eval_reference: torch.Tensor | None = None
        self.stream = IndexStream(len(self.pairs), cfg.trainer.batch_size, seed=cfg.seed)
        # with LoRA the policy with its adapter disabled (no second copy of the base)
        self.reference = reference_model(cfg, model_path(cfg), self.model).to(device)
        self.cache = ReferenceCache(len(self.pairs)) if pref.reference == "cached" else None
        optimizer, scheduler = make_optimizer(self.model.parameters(), cfg.optim, cfg.trainer.steps)
        self.algo = OfflinePreference(
            self.model,
            optimizer,
            scheduler,
            pref,
            grad_clip=cfg.optim.grad_clip,
            precision=cfg.model.precision,
            pad_id=pad_token_id(self.tokenizer),
            layout=choose_layout(*layout_models(self.model, self.reference)),
            micro_batching=micro_batching(cfg),
            gradient_checkpointing=cfg.model.gradient_checkpointing,
        )

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

    def _reference_log_probs(self, indices: list[int]) -> torch.Tensor:
        """(B, 2) reference log-probs of the batch: from the cache, or computed now."""
        if self.cache is None:
            return self.algo.reference_log_probs(self.reference, [self.pairs[i] for i in indices])
        missing = self.cache.missing(indices)
        if missing:
            pairs = [self.pairs[i] for i in missing]
            self.cache.put(missing, self.algo.reference_log_probs(self.reference, pairs))
        self._free_reference_when_done()
        return self.cache.get(indices)

    def _free_reference_when_done(self) -> None:
        done_eval = self.eval_reference is not None or not self.eval_pairs
        if self.cache is not None and self.cache.complete and done_eval:
            self.reference = None

    def step(self, step: int, timer) -> dict[str, float]:
        indices = self.stream.next_batch()
        with timer.phase("reference"):
            reference = self._reference_log_probs(indices)
        with timer.phase("update"):
            return self.algo.step([self.pairs[i] for i in indices], reference)

    def evaluate(self) -> Evaluation:
        """Held-out loss, preference accuracy and implicit rewards on the eval pairs; greedy
        samples (and exact match, built-in data) on their prompts."""
        metrics = Evaluation()
        if self.eval_pairs:
            if self.eval_reference is None:
                self.eval_reference = self.algo.reference_log_probs(self.reference, self.eval_pairs)
                self._free_reference_when_done()
            metrics |= self.algo.evaluate(self.eval_pairs, self.eval_reference)
        if self.eval_prompts is not None:
            policy = evaluate_policy(
                self.model,
                self.tokenizer,
                self.eval_prompts,
                max_new_tokens=self.cfg.rollout.max_new_tokens,
                stop_strings=tuple(self.cfg.rollout.stop_strings),
                num_samples=self.cfg.trainer.log_samples,
                precision=self.cfg.model.precision,
            )
            metrics.merge(policy)
        return metrics

    def trained_models(self) -> dict:
        return {"policy": self.model}

    def state_dict(self) -> dict:
        state = {
            "optimizer": self.algo.optimizer.state_dict(),
            "scheduler": self.algo.scheduler.state_dict(),
            "data": self.stream.state_dict(),
        }
        if self.cache is not None:
            state["reference_cache"] = self.cache.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.algo.optimizer.load_state_dict(state["optimizer"])
        self.algo.scheduler.load_state_dict(state["scheduler"])
        self.stream.load_state_dict(state["data"])
        if self.cache is not None and "reference_cache" in state:
            self.cache.load_state_dict(state["reference_cache"])
            self._free_reference_when_done()

    def close(self) -> None:  # nothing started: everything is in this process
        pass
