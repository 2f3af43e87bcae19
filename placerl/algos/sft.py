"""Supervised fine-tuning: next-token cross-entropy on the completion tokens only."""

from __future__ import annotations

import torch

from placerl.data.collate import sft_batch
from placerl.models.device import on_model_device
from placerl.roles.common import autocast, clip_and_step, position_ids


class SFT:
    """One optimizer step per batch of (prompt, completion) pairs."""

    def __init__(
        self, model, tokenizer, optimizer, scheduler, *, max_len: int, grad_clip, precision: str
    ):
        self.model, self.tokenizer = model, tokenizer
        self.optimizer, self.scheduler = optimizer, scheduler
        self.max_len, self.grad_clip, self.precision = max_len, grad_clip, precision

    def step(self, pairs: list[tuple[str, str]]) -> dict[str, float]:
        batch = on_model_device(sft_batch(self.tokenizer, pairs, self.max_len), self.model)
        self.model.train()
        mask = batch["attention_mask"]
        with autocast(self.precision):
            out = self.model(
                input_ids=batch["input_ids"],
                attention_mask=mask,
                position_ids=position_ids(mask),
                labels=batch["labels"],
            )
        out.loss.backward()
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(self.model, self.optimizer, self.grad_clip, out.loss)
        self.scheduler.step()
        tokens = int((batch["labels"] != -100).sum())
        return {
            "loss/sft": float(out.loss.detach()),
            "sft/grad_norm": grad_norm,
            "sft/lr": lr,
            "sft/completion_tokens": tokens,
            "throughput/tokens": int(mask.sum()),
            "data/truncated": batch["num_truncated"],
        }

    @torch.no_grad()
    def eval_loss(self, pairs: list[tuple[str, str]]) -> float:
        batch = on_model_device(sft_batch(self.tokenizer, pairs, self.max_len), self.model)
        self.model.eval()
        mask = batch["attention_mask"]
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=mask,
            position_ids=position_ids(mask),
            labels=batch["labels"],
        )
        return float(out.loss)
