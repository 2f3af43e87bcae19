"""Reward-model training: the Bradley–Terry loss −log σ(r(x, y_w) − r(x, y_l)) (InstructGPT).

The reward model is a sequence-classification transformer with one label; its score is read at
the last attended token of ``[prompt | response]`` (right-padded here), the response's end
token: the same token PPO scoring reads (``models/scores.py::sequence_scores``); cutting a
micro-batch's columns to its longest row changes no score.

A step runs in micro-batches of whole pairs (a pair is two sequences of
``trainer.micro_batch_size``), on one rank or several (``algos/offline.py``), whose summed
losses are divided by the batch's number of pairs: the gradient of one big forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from placerl.algos.offline import OfflineKind, Share, in_order_share, one_process_step
from placerl.data.collate import pad_token_id
from placerl.data.examples import EncodedPair, encode_comparisons, pair_rows
from placerl.models.device import on_model_device
from placerl.models.lm_head import enable_gradient_checkpointing
from placerl.models.micro_batches import MicroBatching
from placerl.models.precision import autocast
from placerl.models.scores import sequence_scores
from placerl.models.shared_prefix import position_ids
from placerl.models.training import clip_and_step


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean −log σ(r_w − r_l) over pairs; (B,), (B,) -> scalar."""
    return -F.logsigmoid(chosen - rejected).mean()


def _metrics(sums: dict[str, float]) -> dict[str, float]:
    out = dict(sums)
    out["data/truncated"] = int(round(out.get("data/truncated", 0.0)))
    return out


RM_KIND = OfflineKind(
    name="rm",
    loss_key="loss/reward_model",
    lengths=lambda p: [len(p.prompt) + len(p.chosen), len(p.prompt) + len(p.rejected)],
    tokens=lambda p: 2 * len(p.prompt) + len(p.chosen) + len(p.rejected),
    total=len,
    metrics=_metrics,
)


class RewardModelTraining:
    """One optimizer step per batch of comparisons (``OfflineAlgorithm``)."""

    def __init__(
        self,
        model,
        tokenizer,
        optimizer,
        scheduler,
        *,
        max_len: int,
        grad_clip,
        precision: str,
        micro_batching: MicroBatching | None = None,
        gradient_checkpointing: bool = False,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.optimizer, self.scheduler = optimizer, scheduler
        self.max_len, self.grad_clip, self.precision = max_len, grad_clip, precision
        self.micro_batching = micro_batching or MicroBatching()
        self.pad_id = pad_token_id(tokenizer)
        if gradient_checkpointing:
            enable_gradient_checkpointing(model)

    def encode(self, triples: Sequence[tuple[str, str, str]]) -> list[EncodedPair]:
        return encode_comparisons(self.tokenizer, triples, self.max_len)

    def pair_scores(self, pairs: Sequence[EncodedPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B,) scores of the chosen and the rejected responses, in one forward."""
        batch = on_model_device(pair_rows(pairs, self.pad_id), self.model)
        mask = batch["attention_mask"]
        with autocast(self.precision):
            scores = sequence_scores(
                self.model, batch["input_ids"], mask, position_ids=position_ids(mask)
            )
        chosen, rejected = scores.chunk(2)
        return chosen, rejected

    def step(self, triples: Sequence[tuple[str, str, str]]) -> dict[str, float]:
        """One update on text comparisons, in this process."""
        return self.train(self.encode(triples))

    def train(self, pairs: Sequence[EncodedPair]) -> dict[str, float]:
        share = in_order_share(RM_KIND, pairs, self.micro_batching)
        return one_process_step(self, RM_KIND, share)

    def accumulate(self, share: Share) -> dict[str, float]:
        self.model.train()
        keys = ("loss/reward_model", "rm/accuracy", "rm/margin", "data/truncated")
        sums = dict.fromkeys(keys, 0.0)
        for part in share.parts:
            pairs = share.micro_batch(part)
            chosen, rejected = self.pair_scores(pairs)
            loss = -F.logsigmoid(chosen - rejected).sum()
            (loss * share.weight(1.0) if part else loss * 0.0).backward()
            if not part:
                continue
            total = max(share.total, 1.0)
            sums["loss/reward_model"] += float(loss.detach()) / total
            sums["rm/accuracy"] += float((chosen > rejected).sum()) / total
            sums["rm/margin"] += float((chosen - rejected).detach().sum()) / total
            sums["data/truncated"] += sum(p.truncated for p in pairs)
        return sums

    def apply(self, loss: float | None = None) -> dict[str, float]:
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(self.model, self.optimizer, self.grad_clip, loss)
        self.scheduler.step()
        return {"rm/grad_norm": grad_norm, "rm/lr": lr}

    def _scores(
        self, triples: Sequence[tuple[str, str, str]]
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(B,), (B,) scores of the chosen and rejected responses, and how many pairs were cut
        to fit ``max_len``; in micro-batches, with gradients if they are on."""
        pairs = self.encode(triples)
        share = in_order_share(RM_KIND, pairs, self.micro_batching)
        parts = [self.pair_scores(share.micro_batch(part)) for part in share.parts]
        chosen = torch.cat([p[0] for p in parts])
        rejected = torch.cat([p[1] for p in parts])
        return chosen, rejected, sum(p.truncated for p in pairs)

    @torch.no_grad()
    def held_out_scores(
        self, triples: list[tuple[str, str, str]], batch_size: int = 128
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,), (N,) float32 scores of the chosen and the rejected responses (eval mode)."""
        self.model.eval()
        parts = [
            self._scores(triples[i : i + batch_size]) for i in range(0, len(triples), batch_size)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    @torch.no_grad()
    def pairwise_accuracy(
        self, triples: list[tuple[str, str, str]], batch_size: int = 128
    ) -> float:
        if not triples:
            return 0.0
        chosen, rejected = self.held_out_scores(triples, batch_size)
        return int((chosen > rejected).sum()) / len(triples)
