"""Supervised fine-tuning: next-token cross-entropy on the completion tokens only.

The loss is the mean NLL over every completion token of the batch (what Hugging Face's
``labels=`` loss computes). The batch runs in micro-batches (``trainer.micro_batch_size``,
``trainer.max_tokens_per_micro_batch``), on one rank or several (``algos/offline.py``), whose
token sums are divided by the whole batch's count of completion tokens, so the gradient is
that of one big forward; only completion positions go through the LM head, in chunks
(models/lm_head.selected_log_probs).

Padding-free packing (``data.packing: auto``): a micro-batch's examples are laid out end to
end in rows (``data/packing.py``), position ids restarting at 0 for each, where the model
keeps them apart (checked once, ``models/packed.choose_layout``): flash attention's
variable-length kernel on GPU, a block mask otherwise. The loss is the padded one's, up to
summation order; only the padding is gone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from placerl.algos.offline import OfflineKind, Share, in_order_share, one_process_step
from placerl.data.examples import SFTExample, encode_sft, sft_rows
from placerl.data.packing import pack
from placerl.models.device import on_model_device
from placerl.models.lm_head import enable_gradient_checkpointing, selected_log_probs
from placerl.models.micro_batches import MicroBatching
from placerl.models.packed import choose_layout, sequence_sums
from placerl.models.precision import autocast
from placerl.models.shared_prefix import position_ids
from placerl.models.training import clip_and_step

IGNORE = -100
SFT_LAYOUTS = ("packed", "shared", "padded")  # one response per group: no prompt to share


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


def choose_sft_layout(model) -> str:
    """``packed`` where the model reads restarting positions as sequences, else ``shared``
    (an explicit mask keeps them apart), else ``padded``."""
    return choose_layout(model, order=SFT_LAYOUTS)


def _metrics(sums: dict[str, float]) -> dict[str, float]:
    out = dict(sums)
    slots, tokens = out.pop("_slots", 0.0), out.get("throughput/tokens", 0.0)
    for key in ("sft/completion_tokens", "throughput/tokens", "data/truncated"):
        out[key] = int(round(out.get(key, 0.0)))
    out["data/padding"] = (slots - tokens) / slots if slots else 0.0
    return out


SFT_KIND = OfflineKind(
    name="sft",
    loss_key="loss/sft",
    lengths=lambda e: [e.tokens],
    tokens=lambda e: e.tokens,
    total=lambda examples: sum(len(e.completion) for e in examples),
    metrics=_metrics,
)


class SFT:
    """One optimizer step per batch of demonstrations (``OfflineAlgorithm``)."""

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
        layout: str = "padded",
        pad_id: int | None = None,
    ):
        from placerl.data.collate import pad_token_id

        self.model, self.tokenizer = model, tokenizer
        self.optimizer, self.scheduler = optimizer, scheduler
        self.max_len, self.grad_clip, self.precision = max_len, grad_clip, precision
        self.micro_batching = micro_batching or MicroBatching()
        self.layout = layout
        self.pad_id = pad_token_id(tokenizer) if pad_id is None else pad_id
        if gradient_checkpointing:
            enable_gradient_checkpointing(model)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[SFTExample]:
        return encode_sft(self.tokenizer, pairs, self.max_len)

    def step(self, pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
        """One update on text pairs, in this process."""
        return self.train(self.encode(pairs))

    def train(self, examples: Sequence[SFTExample]) -> dict[str, float]:
        """One update on encoded examples, in this process, micro-batches cut in order."""
        share = in_order_share(SFT_KIND, examples, self.micro_batching)
        return one_process_step(self, SFT_KIND, share)

    def micro_batch_nll(self, examples: Sequence[SFTExample]) -> tuple[Tensor, int]:
        """Σ −log p over the completions of ``examples`` in one forward; the token slots the
        forward computed (padding included)."""
        if self.layout == "padded":
            rows = on_model_device(sft_rows(examples, self.pad_id), self.model)
            return completion_nll(self.model, rows), rows["input_ids"].numel()
        groups = [(e.prompt, [e.completion]) for e in examples]
        packed = pack(groups, self.pad_id, self.layout)
        return -sequence_sums(self.model, packed).sum(), packed.input_ids.numel()

    def accumulate(self, share: Share) -> dict[str, float]:
        self.model.train()
        sums = {"loss/sft": 0.0, "sft/completion_tokens": 0.0, "throughput/tokens": 0.0}
        sums |= {"data/truncated": 0.0, "_slots": 0.0}
        for part in share.parts:
            examples = share.micro_batch(part)
            with autocast(self.precision):
                nll, slots = self.micro_batch_nll(examples)
            (nll * share.weight(1.0) if part else nll * 0.0).backward()
            if not part:
                continue
            sums["loss/sft"] += float(nll.detach()) / max(share.total, 1.0)
            sums["sft/completion_tokens"] += sum(len(e.completion) for e in examples)
            sums["throughput/tokens"] += sum(e.tokens for e in examples)
            sums["data/truncated"] += sum(e.truncated for e in examples)
            sums["_slots"] += slots
        return sums

    def apply(self, loss: float | None = None) -> dict[str, float]:
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(self.model, self.optimizer, self.grad_clip, loss)
        self.scheduler.step()
        return {"sft/grad_norm": grad_norm, "sft/lr": lr}

    @torch.no_grad()
    def eval_loss(self, pairs: list[tuple[str, str]]) -> float:
        """Mean NLL per completion token of ``pairs`` (eval mode, micro-batches in order)."""
        examples = self.encode(pairs)
        self.model.eval()
        share = in_order_share(SFT_KIND, examples, self.micro_batching)
        total = 0.0
        for part in share.parts:
            with autocast(self.precision):
                total += float(self.micro_batch_nll(share.micro_batch(part))[0])
        return total / max(share.total, 1.0)
