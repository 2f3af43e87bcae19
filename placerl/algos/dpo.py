"""The offline preference step (DPO, SLiC, IPO): pack the pairs, score them, take one update.

Both responses of every pair go through ONE forward pass, without padding waste, and the
prompt they share is computed once: pairs are laid out ``[prompt | chosen | rejected]`` with
an attention mask that keeps the two responses apart, several pairs per row (the ``shared``
layout of ``placerl.data.packing``). ``choose_layout`` checks once, on the actual model, that
it computes what the sequences would alone; a model that does not honour the mask gets the
``packed`` layout (one ``[prompt | response]`` per segment), and failing that, plain padding.
Only the logits of response tokens are read; a sequence's log-probability is the sum over its
response tokens.

Where this departs from TRL's ``DPOTrainer``: prompt and responses are tokenized apart (the
boundary is exact; see ``placerl.data.collate``), IPO's per-token averaging is applied to the
rewards that are logged too, and the SFT term of ``sft_coef`` is a per-sequence token mean.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor

from placerl.algos.offline import OfflineKind, Share, in_order_share, one_process_step
from placerl.algos.preference import LOSS_KINDS, preference_loss
from placerl.config.preference import PreferenceConfig
from placerl.data.examples import EncodedPair
from placerl.data.packing import Packed, pack
from placerl.models.device import CPU
from placerl.models.lm_head import enable_gradient_checkpointing
from placerl.models.lora import FrozenBase, adapter_disabled
from placerl.models.micro_batches import MicroBatching
from placerl.models.packed import choose_layout, layout_works, sequence_sums
from placerl.models.precision import autocast
from placerl.models.training import clip_and_step

__all__ = ["EncodedPair", "OfflinePreference", "choose_layout", "layout_works", "pack_pairs"]
__all__ += ["sequence_sums", "DPO_KIND"]


def pack_pairs(pairs: Sequence[EncodedPair], pad_id: int, layout: str = "shared") -> Packed:
    """Sequences 0..B-1 are the chosen responses, B..2B-1 the rejected ones."""
    return pack([(p.prompt, (p.chosen, p.rejected)) for p in pairs], pad_id, layout)


def _metrics(sums: dict[str, float]) -> dict[str, float]:
    out = dict(sums)
    slots, tokens = out.pop("_slots", 0.0), out.get("throughput/tokens", 0.0)
    out["throughput/tokens"] = int(round(tokens))
    out["data/truncated"] = int(round(out.get("data/truncated", 0.0)))
    out["data/padding"] = (slots - tokens) / slots if slots else 0.0
    return out


DPO_KIND = OfflineKind(
    name="dpo",
    loss_key="",  # the update checks the gradient norm only
    lengths=lambda p: [len(p.prompt) + len(p.chosen), len(p.prompt) + len(p.rejected)],
    tokens=lambda p: len(p.prompt) + len(p.chosen) + len(p.rejected),
    total=len,
    metrics=_metrics,
)


class OfflinePreference:
    """One optimizer step per batch of pairs, given the reference log-probs of the batch."""

    def __init__(
        self,
        model,
        optimizer,
        scheduler,
        cfg: PreferenceConfig,
        *,
        grad_clip: float | None,
        precision: str,
        pad_id: int,
        layout: str = "shared",
        micro_batching: MicroBatching | None = None,
        gradient_checkpointing: bool = False,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.micro_batching = micro_batching or MicroBatching()
        if gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.cfg, self.grad_clip, self.precision = cfg, grad_clip, precision
        self.pad_id, self.layout = pad_id, layout

    def pack(self, pairs: Sequence[EncodedPair]) -> Packed:
        return pack_pairs(pairs, self.pad_id, self.layout)

    def log_probs(self, model, packed: Packed) -> Tensor:
        """(B, 2) summed log-probs [chosen, rejected] of the packed pairs under ``model``,
        computed where the model lives and returned on the CPU (with their gradient)."""
        base = contextlib.nullcontext()
        if isinstance(model, FrozenBase):  # the LoRA model itself, so its head can be chunked
            model, base = model.lora_model, adapter_disabled(model.lora_model)
        with base, autocast(self.precision):
            sums = sequence_sums(model, packed)
        return torch.stack(sums.chunk(2), dim=1).to(CPU)

    @torch.no_grad()
    def reference_log_probs(self, reference, pairs: Sequence[EncodedPair], chunk: int = 64):
        """(B, 2) under the frozen reference, in chunks of ``chunk`` pairs."""
        parts = [
            self.log_probs(reference, self.pack(pairs[i : i + chunk]))
            for i in range(0, len(pairs), chunk)
        ]
        return torch.cat(parts)

    def loss(self, policy: Tensor, reference: Tensor, lengths: Tensor):
        """Loss and stats from (B, 2) policy and reference sums and (B, 2) response lengths."""
        if self.cfg.loss == "ipo":  # IPO compares per-token mean log-probs
            policy, reference = policy / lengths, reference / lengths
        chosen_nll = None
        if self.cfg.sft_coef:
            chosen_nll = -(policy[:, 0] if self.cfg.loss == "ipo" else policy[:, 0] / lengths[:, 0])
        return preference_loss(
            policy[:, 0],
            policy[:, 1],
            reference[:, 0],
            reference[:, 1],
            kind=LOSS_KINDS[self.cfg.loss],
            beta=self.cfg.beta,
            label_smoothing=self.cfg.label_smoothing,
            margin=self.cfg.margin,
            sft_coef=self.cfg.sft_coef,
            chosen_nll=chosen_nll,
        )

    def step(self, pairs: Sequence[EncodedPair], reference: Tensor) -> dict[str, float]:
        """One update on ``pairs`` in this process; ``reference`` is their (B, 2) reference
        log-probs. Each micro-batch's mean loss is weighted by its share of the pairs: the
        gradient of the batch's mean loss, as one forward would give."""
        share = in_order_share(DPO_KIND, pairs, self.micro_batching)
        share.reference = reference
        return one_process_step(self, DPO_KIND, share)

    @torch.no_grad()
    def fill_reference(self, reference_model, share: Share) -> Tensor | None:
        """The share's missing (NaN) reference sums, computed micro-batch by micro-batch and
        written into ``share.reference``; returns the (n, 2) values, or None when nothing was
        missing. In lockstep (FSDP) a micro-batch with nothing missing runs a filler forward
        whenever some rank computes this step, so every rank runs as many."""
        if share.reference is None or not share.reference_pass:
            return None
        missing = torch.isnan(share.reference[:, 0])
        for part in share.parts:
            rows = [i for i in part if missing[i]]
            if rows:
                values = self.log_probs(reference_model, self.pack(share.micro_batch(rows)))
                share.reference[rows] = values.to(share.reference.dtype)
            elif share.lockstep:
                self.log_probs(reference_model, self.pack(share.examples[:1]))
        return share.reference if bool(missing.any()) else None

    def accumulate(self, share: Share) -> dict[str, float]:
        self.model.train()
        loss_key = f"loss/{self.cfg.loss}"
        sums: dict[str, float] = {loss_key: 0.0, "logps/chosen": 0.0, "logps/rejected": 0.0}
        sums |= {"throughput/tokens": 0.0, "_slots": 0.0, "data/truncated": 0.0}
        for part in share.parts:
            pairs = share.micro_batch(part)
            packed = self.pack(pairs)
            policy = self.log_probs(self.model, packed)
            if not part:
                (policy.sum() * 0.0).backward()
                continue
            micro_loss, stats = self.loss(policy, share.reference[part], _pair_lengths(packed))
            (micro_loss * share.weight(len(part))).backward()
            mean = len(part) / share.total
            sums[loss_key] += float(micro_loss.detach()) * mean
            for key, value in _reward_metrics(stats).items():
                sums[key] = sums.get(key, 0.0) + value * mean
            sums["logps/chosen"] += float(policy[:, 0].detach().sum()) / share.total
            sums["logps/rejected"] += float(policy[:, 1].detach().sum()) / share.total
            sums["throughput/tokens"] += packed.num_tokens
            sums["_slots"] += packed.input_ids.numel()
            sums["data/truncated"] += sum(p.truncated for p in pairs)
        return sums

    def apply(self, loss: float | None = None) -> dict[str, float]:
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(self.model, self.optimizer, self.grad_clip, loss)
        self.scheduler.step()
        return {"dpo/grad_norm": grad_norm, "dpo/lr": lr}

    @torch.no_grad()
    def evaluate(
        self, pairs: Sequence[EncodedPair], reference: Tensor, chunk: int = 64
    ) -> dict[str, float]:
        """Held-out preference accuracy (implicit reward margin > 0), margins, loss."""
        self.model.eval()
        policy, lengths = [], []
        for i in range(0, len(pairs), chunk):
            packed = self.pack(pairs[i : i + chunk])
            policy.append(self.log_probs(self.model, packed))
            lengths.append(_pair_lengths(packed))
        loss, stats = self.loss(torch.cat(policy), reference, torch.cat(lengths))
        metrics = {"eval/loss": float(loss)}
        metrics |= {f"eval/{k}": v for k, v in _reward_metrics(stats).items()}
        metrics["eval/preference_accuracy"] = metrics.pop("eval/rewards/accuracy")
        return metrics


def _pair_lengths(packed: Packed) -> Tensor:
    return torch.stack(packed.lengths.chunk(2), dim=1)  # (B, 2)


def _reward_metrics(stats: dict[str, Tensor]) -> dict[str, float]:
    names = {
        "rewards_chosen": "rewards/chosen",
        "rewards_rejected": "rewards/rejected",
        "margin": "rewards/margin",
        "reward_accuracy": "rewards/accuracy",
        "sft_nll": "loss/sft_nll",
    }
    return {names[k]: float(v) for k, v in stats.items()}
