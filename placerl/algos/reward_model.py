"""Reward-model training: the Bradley–Terry loss −log σ(r(x, y_w) − r(x, y_l)) (InstructGPT).

The reward model is a sequence-classification transformer with one label; its score is read at
the last attended token of ``[prompt | response]`` (right-padded here), the response's end
token: the same token PPO scoring reads (``models/scores.py::sequence_scores``); cutting a
micro-batch's columns to its longest row changes no score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from placerl.data.collate import preference_batch
from placerl.models.device import on_model_device
from placerl.models.lm_head import enable_gradient_checkpointing
from placerl.models.micro_batches import MicroBatching, pack_units
from placerl.models.precision import autocast
from placerl.models.scores import sequence_scores
from placerl.models.shared_prefix import position_ids
from placerl.models.training import clip_and_step


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean −log σ(r_w − r_l) over pairs; (B,), (B,) -> scalar."""
    return -F.logsigmoid(chosen - rejected).mean()


class RewardModelTraining:
    """One optimizer step per batch of comparisons, in micro-batches of whole pairs (a pair
    is two sequences of ``trainer.micro_batch_size``) whose summed losses are divided by the
    batch's number of pairs: the gradient of one big forward."""

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
        if gradient_checkpointing:
            enable_gradient_checkpointing(model)

    def _batch_scores(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        batch = on_model_device(batch, self.model)
        mask = batch["attention_mask"]
        with autocast(self.precision):
            scores = sequence_scores(
                self.model, batch["input_ids"], mask, position_ids=position_ids(mask)
            )
        chosen, rejected = scores.chunk(2)
        return chosen, rejected

    def _micro_batches(self, batch: dict) -> list[dict]:
        """Micro-batches of whole pairs: rows [i] (chosen) and [B + i] (rejected) together."""
        mask = batch["attention_mask"]
        pairs = mask.shape[0] // 2
        tokens = (mask[:pairs].sum(-1) + mask[pairs:].sum(-1)).tolist()
        parts = pack_units([[i] for i in range(pairs)], tokens, 2, self.micro_batching)
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        if len(parts) == 1:
            return [tensors]
        out = []
        for part in parts:
            index = torch.tensor(part, dtype=torch.long)
            rows = torch.cat([index, index + pairs])
            width = max(1, int(mask[rows].sum(-1).max()))  # right-padded
            out.append({k: v[rows, :width] for k, v in tensors.items()})
        return out

    def step(self, triples: list[tuple[str, str, str]]) -> dict[str, float]:
        self.model.train()
        batch = preference_batch(self.tokenizer, triples, self.max_len)
        total = len(triples)
        loss, chosen_all, rejected_all = torch.zeros(()), [], []
        for micro in self._micro_batches(batch):
            chosen, rejected = self._batch_scores(micro)
            part = -F.logsigmoid(chosen - rejected).sum() / max(total, 1)
            part.backward()
            loss += part.detach().cpu()
            chosen_all.append(chosen.detach())
            rejected_all.append(rejected.detach())
        chosen, rejected = torch.cat(chosen_all), torch.cat(rejected_all)
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(self.model, self.optimizer, self.grad_clip, loss)
        self.scheduler.step()
        return {
            "loss/reward_model": float(loss),
            "rm/accuracy": float((chosen > rejected).float().mean()),
            "rm/margin": float((chosen - rejected).mean()),
            "rm/grad_norm": grad_norm,
            "rm/lr": lr,
            "data/truncated": batch["num_truncated"],
        }

    def _scores(
        self, triples: list[tuple[str, str, str]]
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(B,), (B,) scores of the chosen and rejected responses, and how many pairs were cut
        to fit ``max_len``; in micro-batches, with gradients if they are on."""
        batch = preference_batch(self.tokenizer, triples, self.max_len)
        parts = [self._batch_scores(micro) for micro in self._micro_batches(batch)]
        chosen = torch.cat([p[0] for p in parts])
        rejected = torch.cat([p[1] for p in parts])
        return chosen, rejected, batch["num_truncated"]

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
