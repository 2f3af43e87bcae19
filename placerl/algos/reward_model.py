"""Reward-model training: the Bradley–Terry loss −log σ(r(x, y_w) − r(x, y_l)) (InstructGPT).

The reward model is a sequence-classification transformer with one label; its score is read at
the last attended token of ``[prompt | response]`` (right-padded here), the response's end
token: the same token PPO scoring reads (``roles/reward.py::sequence_scores``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from placerl.data.collate import preference_batch
from placerl.models.device import on_model_device
from placerl.roles.common import autocast, clip_and_step, position_ids
from placerl.roles.reward import sequence_scores


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean −log σ(r_w − r_l) over pairs; (B,), (B,) -> scalar."""
    return -F.logsigmoid(chosen - rejected).mean()


class RewardModelTraining:
    def __init__(
        self, model, tokenizer, optimizer, scheduler, *, max_len: int, grad_clip, precision: str
    ):
        self.model, self.tokenizer = model, tokenizer
        self.optimizer, self.scheduler = optimizer, scheduler
        self.max_len, self.grad_clip, self.precision = max_len, grad_clip, precision

    def _scores(
        self, triples: list[tuple[str, str, str]]
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        batch = on_model_device(preference_batch(self.tokenizer, triples, self.max_len), self.model)
        mask = batch["attention_mask"]
        with autocast(self.precision):
            scores = sequence_scores(
                self.model, batch["input_ids"], mask, position_ids=position_ids(mask)
            )
        chosen, rejected = scores.chunk(2)
        return chosen, rejected, batch["num_truncated"]

    def step(self, triples: list[tuple[str, str, str]]) -> dict[str, float]:
        self.model.train()
        chosen, rejected, truncated = self._scores(triples)
        loss = bradley_terry_loss(chosen, rejected)
        loss.backward()
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(self.model, self.optimizer, self.grad_clip, loss)
        self.scheduler.step()
        return {
            "loss/reward_model": float(loss.detach()),
            "rm/accuracy": float((chosen > rejected).float().mean()),
            "rm/margin": float((chosen - rejected).detach().mean()),
            "rm/grad_norm": grad_norm,
            "rm/lr": lr,
            "data/truncated": truncated,
        }

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
        self.model.eval()
        correct = 0
        for i in range(0, len(triples), batch_size):
            chosen, rejected, _ = self._scores(triples[i : i + batch_size])
            correct += int((chosen > rejected).sum())
        return correct / max(1, len(triples))
