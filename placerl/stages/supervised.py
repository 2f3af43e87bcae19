"""Offline stages on fixed data: SFT on demonstrations, reward model on comparisons."""

from __future__ import annotations

import logging

from placerl.algos.reward_model import RewardModelTraining
from placerl.algos.sft import SFT
from placerl.config.schema import RunConfig
from placerl.data.collate import sft_batch
from placerl.data.stream import IndexStream
from placerl.errors import UserError
from placerl.evaluation import Evaluation, evaluate_policy, reward_model_metrics, sft_loss
from placerl.models.device import resolve_device
from placerl.models.loading import LoadOptions, load_reward_model, load_tokenizer
from placerl.models.lora import with_lora
from placerl.models.micro_batches import micro_batching
from placerl.models.training import make_optimizer
from placerl.stages.heldout import sft_held_out
from placerl.stages.sources import (
    eval_source,
    model_path,
    preference_triples,
    sft_pairs,
    tokenizer_and_policy,
)

log = logging.getLogger(__name__)
_CHUNK = 1024  # examples tokenized at once by the start-up length check


def _stream(cfg: RunConfig, size: int, what: str) -> IndexStream:
    if size == 0:
        raise UserError(f"the {what} dataset is empty", where="data.train")
    return IndexStream(size, cfg.trainer.batch_size, seed=cfg.seed)


def check_sft_lengths(tokenizer, pairs: list[tuple[str, str]], cfg: RunConfig, source: str):
    """Say once, at start, how many examples do not fit ``data.max_len`` (their completions
    are cut, as DPO cuts pairs), or refuse them with ``data.over_length: error``. Encoding in
    chunks also names the row of a prompt that leaves no room for its completion."""
    max_len, cut = cfg.data.max_len, []
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        rows = list(range(start, start + len(chunk)))
        try:
            truncated = sft_batch(tokenizer, chunk, max_len, rows=rows)["num_truncated"]
        except UserError as err:
            raise UserError(err.message, where=f"{source} {err.where}") from None
        if truncated:
            cut += [
                r
                for r, p in zip(rows, chunk)
                if sft_batch(tokenizer, [p], max_len)["num_truncated"]
            ]
    if not cut:
        return
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


def _build_algorithm(cls, cfg: RunConfig, model, tokenizer):
    """SFT and reward-model training take the same pieces: model, optimizer, limits."""
    optimizer, scheduler = make_optimizer(model.parameters(), cfg.optim, cfg.trainer.steps)
    return cls(
        model,
        tokenizer,
        optimizer,
        scheduler,
        max_len=cfg.data.max_len,
        grad_clip=cfg.optim.grad_clip,
        precision=cfg.model.precision,
        micro_batching=micro_batching(cfg),
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )


class SFTStage:
    name = "sft"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.tokenizer, self.model = tokenizer_and_policy(cfg)
        self.model.to(resolve_device(cfg.placement.device))
        self.pairs = sft_pairs(cfg, self.tokenizer, cfg.data.train)
        check_sft_lengths(self.tokenizer, self.pairs, cfg, source=cfg.data.train)
        self.stream = _stream(cfg, len(self.pairs), "SFT")
        self.held_out = sft_held_out(cfg, self.tokenizer)
        self.algo = _build_algorithm(SFT, cfg, self.model, self.tokenizer)

    def step(self, step: int, timer) -> dict[str, float]:
        with timer.phase("update"):
            return self.algo.step([self.pairs[i] for i in self.stream.next_batch()])

    def evaluate(self) -> Evaluation:
        """Held-out ``eval/loss`` (SFT rows), ``eval/accuracy`` (rows with an answer) and a
        few greedy samples; see ``stages/heldout.py``."""
        cfg, result = self.cfg, Evaluation()
        if self.held_out is None:
            return result
        if self.held_out.pairs:
            result["eval/loss"] = sft_loss(
                self.model,
                self.tokenizer,
                self.held_out.pairs,
                max_len=cfg.data.max_len,
                precision=cfg.model.precision,
            )
        if self.held_out.prompts is not None:
            policy = evaluate_policy(
                self.model,
                self.tokenizer,
                self.held_out.prompts,
                max_new_tokens=cfg.rollout.max_new_tokens,
                stop_strings=tuple(cfg.rollout.stop_strings),
                num_samples=cfg.trainer.log_samples,
                precision=cfg.model.precision,
            )
            result.merge(policy)
        return result

    def trained_models(self) -> dict:
        return {"policy": self.model}

    def state_dict(self) -> dict:
        return {
            "optimizer": self.algo.optimizer.state_dict(),
            "scheduler": self.algo.scheduler.state_dict(),
            "data": self.stream.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.algo.optimizer.load_state_dict(state["optimizer"])
        self.algo.scheduler.load_state_dict(state["scheduler"])
        self.stream.load_state_dict(state["data"])

    def close(self) -> None:  # nothing started: everything is in this process
        pass


class RewardModelStage:
    name = "rm"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        path = model_path(cfg)
        options = LoadOptions.of(cfg.model)
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or path, options)
        self.model = with_lora(
            load_reward_model(path, options=options), cfg.model.lora, "reward_model"
        )
        self.model.to(resolve_device(cfg.placement.device))
        self.triples = preference_triples(cfg, self.tokenizer, cfg.data.train)
        eval_path = eval_source(cfg)
        self.eval_triples = (
            preference_triples(cfg, self.tokenizer, eval_path, "eval", n=cfg.data.num_eval)[
                : cfg.data.num_eval
            ]
            if eval_path
            else []
        )
        self.stream = _stream(cfg, len(self.triples), "preference")
        self.algo = _build_algorithm(RewardModelTraining, cfg, self.model, self.tokenizer)

    def step(self, step: int, timer) -> dict[str, float]:
        with timer.phase("update"):
            return self.algo.step([self.triples[i] for i in self.stream.next_batch()])

    def evaluate(self) -> Evaluation:
        """Held-out pairwise accuracy, Bradley–Terry loss, margin, and a few scored pairs."""
        if not self.eval_triples:
            return Evaluation()
        return reward_model_metrics(self.algo, self.eval_triples, self.cfg.trainer.log_samples)

    def trained_models(self) -> dict:
        return {"reward_model": self.model}

    state_dict = SFTStage.state_dict
    load_state_dict = SFTStage.load_state_dict
    close = SFTStage.close
