"""Supervised fine-tuning: next-token cross-entropy on the completion tokens only.

The loss is the mean NLL over every completion token of the batch (what Hugging Face's
``labels=`` loss computes). The batch runs in micro-batches (``trainer.micro_batch_size``,
``trainer.max_tokens_per_micro_batch``) whose token sums are divided by the whole batch's
count of completion tokens, so the gradient is that of one big forward; only completion
positions go through the LM head, in chunks (models/lm_head.selected_log_probs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from placerl.data.collate import sft_batch
from placerl.models.device import on_model_device
from placerl.models.lm_head import enable_gradient_checkpointing, selected_log_probs
from placerl.models.micro_batches import MicroBatching, pack_units
from placerl.models.precision import autocast
from placerl.models.shared_prefix import position_ids
from placerl.models.training import clip_and_step

IGNORE = -100


def completion_nll(model, batch: dict) -> Tensor:
    """Σ −log p over the completion tokens of a right-padded ``sft_batch`` (a scalar)."""
    mask, labels = batch["attention_mask"], batch["labels"]
    targets = labels[:, 1:]  # position p predicts token p + 1
    valid = targets != IGNORE
    width = labels.shape[1]
    rows, cols = valid.nonzero(as_tuple=True)
    log_probs = selected_log_probs(
        model,
        rows * width + cols,
        targets[valid],
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=position_ids(mask),
    )
    return -log_probs.sum()


def row_slices(batch: dict, spec: MicroBatching, sequences_per_row: int = 1) -> list[dict]:
    """The batch's micro-batches of rows (whole rows, in order), each cut to its longest row
    (right padding only)."""
    mask = batch["attention_mask"]
    tensors = {k: v for k, v in batch.items() if isinstance(v, Tensor)}
    units = [[i] for i in range(mask.shape[0])]
    parts = pack_units(units, mask.sum(-1).tolist(), sequences_per_row, spec)
    if len(parts) == 1:
        return [tensors]
    out = []
    for part in parts:
        index = torch.tensor(part, dtype=torch.long)
        width = max(1, int(mask[index].sum(-1).max()))
        out.append({k: v[index, :width] for k, v in tensors.items()})
    return out


class SFT:
    """One optimizer step per batch of (prompt, completion) pairs."""

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

    def step(self, pairs: list[tuple[str, str]]) -> dict[str, float]:
        batch = on_model_device(sft_batch(self.tokenizer, pairs, self.max_len), self.model)
        self.model.train()
        tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
        loss = torch.zeros(())
        for micro in row_slices(batch, self.micro_batching):
            with autocast(self.precision):
                part = completion_nll(self.model, micro) / max(tokens, 1)
            part.backward()
            loss += part.detach().cpu()
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(self.model, self.optimizer, self.grad_clip, loss)
        self.scheduler.step()
        return {
            "loss/sft": float(loss),
            "sft/grad_norm": grad_norm,
            "sft/lr": lr,
            "sft/completion_tokens": tokens,
            "throughput/tokens": int(batch["attention_mask"].sum()),
            "data/truncated": batch["num_truncated"],
        }

    @torch.no_grad()
    def eval_loss(self, pairs: list[tuple[str, str]]) -> float:
        batch = on_model_device(sft_batch(self.tokenizer, pairs, self.max_len), self.model)
        self.model.eval()
        tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
        total = sum(
            float(completion_nll(self.model, micro))
            for micro in row_slices(batch, self.micro_batching)
        )
        return total / max(tokens, 1)
