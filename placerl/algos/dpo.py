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
from dataclasses import dataclass

import torch
from torch import Tensor

from placerl.algos.preference import LOSS_KINDS, preference_loss
from placerl.config.preference import PreferenceConfig
from placerl.data.packing import LAYOUTS, Packed, pack
from placerl.models.device import CPU, on_model_device
from placerl.models.lm_head import enable_gradient_checkpointing, selected_log_probs
from placerl.models.lora import FrozenBase, adapter_disabled
from placerl.models.micro_batches import MicroBatching, pack_units
from placerl.models.precision import autocast
from placerl.models.training import clip_and_step


@dataclass(frozen=True)
class EncodedPair:
    """One preference example as token ids (prompt with BOS, responses with EOS, cut to fit)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    truncated: bool = False  # a response was cut to fit data.max_len


def pack_pairs(pairs: Sequence[EncodedPair], pad_id: int, layout: str = "shared") -> Packed:
    """Sequences 0..B-1 are the chosen responses, B..2B-1 the rejected ones."""
    return pack([(p.prompt, (p.chosen, p.rejected)) for p in pairs], pad_id, layout)


def sequence_sums(model, packed: Packed) -> Tensor:
    """(S,) float32 Σ_t log π(y_t | ·) over each sequence's response tokens; only response
    positions go through the LM head, in chunks (models/lm_head.selected_log_probs);
    computed, and returned, on the model's device."""
    packed = on_model_device(packed, model)
    kwargs = {}
    if packed.attention_mask is not None:
        kwargs["attention_mask"] = packed.attention_mask.unsqueeze(1)  # (N, 1, W, W)
    token_log_probs = selected_log_probs(
        model,
        packed.sources,
        packed.targets,
        input_ids=packed.input_ids,
        position_ids=packed.position_ids,
        **kwargs,
    )  # (T,)
    sums = token_log_probs.new_zeros(packed.num_sequences)
    return sums.index_add(0, packed.owners, token_log_probs)


@torch.no_grad()
def layout_works(model, layout: str) -> bool:
    """Whether ``model`` scores random groups laid out in ``layout`` as it scores each
    sequence alone. The groups are chosen so that rows hold several items in every layout."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist()

    groups = [(ids(3), [ids(5)]), (ids(2), [ids(3), ids(1)]), (ids(1), [ids(1)])]
    together = sequence_sums(model, pack(groups, 0, layout))
    alone = [
        sequence_sums(model, pack([(prompt, [response])], 0, "padded"))
        for j in range(2)
        for prompt, responses in groups
        for response in responses[j : j + 1]
    ]
    model.train(was_training)
    return torch.allclose(together, torch.cat(alone), rtol=1e-4, atol=1e-4)


def choose_layout(*models) -> str:
    """The most economical layout that every model honours (``padded`` always works)."""
    for layout in LAYOUTS[:-1]:
        if all(layout_works(model, layout) for model in models):
            return layout
    return "padded"


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

    def micro_batches(self, pairs: Sequence[EncodedPair]) -> list[list[int]]:
        """Index lists of the pairs of each forward: whole pairs (two sequences each) within
        ``trainer.micro_batch_size`` sequences and ``max_tokens_per_micro_batch`` tokens."""
        tokens = [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs]
        return pack_units([[i] for i in range(len(pairs))], tokens, 2, self.micro_batching)

    def step(self, pairs: Sequence[EncodedPair], reference: Tensor) -> dict[str, float]:
        """One update on ``pairs``; ``reference`` is their (B, 2) reference log-probs. Each
        micro-batch's mean loss is weighted by its share of the pairs: the gradient of the
        batch's mean loss, as one forward would give."""
        self.model.train()
        total = len(pairs)
        loss = torch.zeros(())
        policies, stats_sum = [], {}
        tokens = slots = 0
        for part in self.micro_batches(pairs):
            packed = self.pack([pairs[i] for i in part])
            policy = self.log_probs(self.model, packed)
            index = torch.tensor(part, dtype=torch.long, device=reference.device)
            micro_loss, stats = self.loss(policy, reference[index], _pair_lengths(packed))
            share = len(part) / total
            (micro_loss * share).backward()
            loss += float(micro_loss.detach()) * share
            for key, value in stats.items():
                stats_sum[key] = stats_sum.get(key, 0.0) + float(value) * share
            policies.append(policy.detach())
            tokens, slots = tokens + packed.num_tokens, slots + packed.input_ids.numel()
        policy = torch.cat(policies)
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(self.model, self.optimizer, self.grad_clip)
        self.scheduler.step()
        return {
            f"loss/{self.cfg.loss}": float(loss),
            **_reward_metrics(stats_sum),
            "logps/chosen": float(policy[:, 0].mean()),
            "logps/rejected": float(policy[:, 1].mean()),
            "dpo/grad_norm": grad_norm,
            "dpo/lr": lr,
            "throughput/tokens": tokens,
            "data/padding": (slots - tokens) / slots,
            "data/truncated": sum(p.truncated for p in pairs),
        }

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
