"""What every model-holding role needs: forward passes over the batch layout, precision, the
optimizer and its schedule.

The batch layout is ``[left-padded prompt (P) | right-padded response (R)]``. The token at
column P+t is predicted by the logits at column P+t-1, so per-token quantities of the response
come from columns P-1 … P+R-2; ``logits_to_keep=R+1`` keeps only those (plus one) and skips
the vocabulary projection of the prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor

from placerl.config.schema import OptimConfig
from placerl.models.lm_head import (
    drops_kv_cache,
    enable_gradient_checkpointing,
    note_once,
    split_lm,
)
from placerl.models.logprobs import entropy_from_logits, log_probs_from_logits, token_log_probs
from placerl.models.micro_batches import MicroBatching, micro_batches, stat_weights, trim_padding
from placerl.models.precision import autocast  # noqa: F401 (roles import it from here)
from placerl.models.shared_prefix import (
    position_ids,
    prefix_saving,
    shared_prefix_hidden,
    shared_prefix_logits,
    shared_prefix_plan,
)
from placerl.models.training import clip_and_step, make_optimizer
from placerl.types import Batch, Field

MIN_SHARED_SAVING = 0.1  # below this share of tokens saved, one plain pass is cheaper


def response_logits(
    model, batch: Batch, temperature: float = 1.0, share_prefix: bool = True
) -> Tensor:
    """(B, R, V) float32 logits that predict each response token, divided by temperature.

    With ``share_prefix`` a prompt repeated by several rows (a GRPO group) is computed once
    when that saves at least ``MIN_SHARED_SAVING`` of the batch's tokens (models/shared_prefix).
    """
    plan = shared_prefix_plan(batch) if share_prefix else None
    if plan is not None and prefix_saving(batch, plan[0]) >= MIN_SHARED_SAVING:
        logits = shared_prefix_logits(model, batch, *plan).float()
    else:
        width = batch[Field.RESPONSE_IDS].shape[1]
        mask = batch[Field.ATTENTION_MASK]
        out = model(
            input_ids=batch[Field.INPUT_IDS],
            attention_mask=mask,
            position_ids=position_ids(mask),
            use_cache=False,
            logits_to_keep=width + 1,
        )
        logits = out.logits[:, :-1, :].float()
    return logits / temperature if temperature != 1.0 else logits


def response_log_probs(
    model,
    batch: Batch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    share_prefix: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """(B, R) log π(y_t | ·) of the response tokens, and their entropy when asked (with a
    gradient only when an entropy bonus needs one). ``share_prefix``: see ``response_logits``
    (off for FSDP-sharded models, whose ranks must all run the same forwards).

    The vocabulary projection runs in chunks from the decoder's hidden states
    (models/logprobs.token_log_probs): no (B, R, V) logits exist; a model that cannot be split
    into decoder and head (models/lm_head.split_lm) takes the plain logits path.
    """
    share_prefix = share_prefix and _can_share_prefix(model)
    parts = split_lm(model)
    labels = batch[Field.RESPONSE_IDS]
    if parts is None:
        logits = response_logits(model, batch, temperature, share_prefix)
        log_probs = log_probs_from_logits(logits, labels)
        entropy = None
        if with_entropy:
            entropy = entropy_from_logits(logits if entropy_grad else logits.detach())
        return log_probs, entropy
    decoder, head = parts
    hidden = response_hidden(decoder, batch, share_prefix)  # (B, R, H)
    log_probs, entropy = token_log_probs(
        hidden.flatten(0, 1),
        head.weight,
        head.bias,
        labels.flatten(),
        temperature,
        with_entropy=with_entropy,
        entropy_grad=entropy_grad,
    )
    log_probs = log_probs.view(labels.shape)
    return log_probs, entropy.view(labels.shape) if entropy is not None else None


def response_hidden(decoder, batch: Batch, share_prefix: bool = True) -> Tensor:
    """(B, R, H) final hidden states at the positions that predict each response token."""
    plan = shared_prefix_plan(batch) if share_prefix else None
    if plan is not None and prefix_saving(batch, plan[0]) >= MIN_SHARED_SAVING:
        return shared_prefix_hidden(decoder, batch, *plan)
    width = batch[Field.RESPONSE_IDS].shape[1]
    mask = batch[Field.ATTENTION_MASK]
    out = decoder(
        input_ids=batch[Field.INPUT_IDS],
        attention_mask=mask,
        position_ids=position_ids(mask),
        use_cache=False,
    )
    return out.last_hidden_state[:, -width - 1 : -1]


def _can_share_prefix(model) -> bool:
    """The shared-prompt forward needs the KV cache, which checkpointed HF layers drop in
    training mode: then every row runs its whole sequence (said once)."""
    if drops_kv_cache(model):
        note_once(
            "gradient checkpointing is on: the training forward computes each row's prompt "
            "(a shared prompt's KV cache is dropped by checkpointed layers); sampling and "
            "log-prob passes without gradients still share it"
        )
        return False
    return True


def response_values(model, batch: Batch) -> Tensor:
    """(B, R) V(s_t) from a token-classification critic: the value of the state before y_t."""
    width = batch[Field.RESPONSE_IDS].shape[1]
    mask = batch[Field.ATTENTION_MASK]
    out = model(
        input_ids=batch[Field.INPUT_IDS], attention_mask=mask, position_ids=position_ids(mask)
    )
    return out.logits[:, -width - 1 : -1, 0].float()


def minibatch_indices(
    size: int, minibatches: int, generator: torch.Generator | None
) -> list[Tensor]:
    """Split ``range(size)`` into ``minibatches`` near-equal shuffled index sets."""
    order = (
        torch.randperm(size, generator=generator) if generator is not None else torch.arange(size)
    )
    return [chunk for chunk in order.chunk(minibatches) if chunk.numel()]


class TrainedModel:
    """A model with its optimizer, schedule and minibatch shuffler: what actor and critic share.

    ``fit`` runs ``epochs`` × ``minibatches`` optimizer steps of ``loss_of(minibatch)`` and
    advances the schedule once (one RL step); the state is what exact resume needs. Each
    minibatch runs as micro-batches whose gradients accumulate (models/micro_batches.py):
    ``loss_of`` sees one micro-batch and normalises by its own count, ``fit`` reweights.
    """

    loss_agg = "token-mean"  # how ``loss_of`` normalises; set by the role's update
    micro_batch_workers = 1  # ranks that share one micro-batch (a data-parallel runtime: W)

    def __init__(
        self,
        model,
        optim: OptimConfig,
        total_steps: int,
        *,
        lr=None,
        precision="fp32",
        seed=0,
        micro_batching: MicroBatching | None = None,
        gradient_checkpointing: bool = False,
    ):
        self.model = model
        self.optim_cfg = optim
        self.precision = precision
        self.micro_batching = micro_batching or MicroBatching()
        if gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.optimizer, self.scheduler = make_optimizer(model.parameters(), optim, total_steps, lr)
        self.shuffle = torch.Generator().manual_seed(seed)

    def fit(
        self, batch: Batch, loss_of, epochs: int, minibatches: int, prefix: str
    ) -> dict[str, float]:
        self.model.train()
        sums: dict[str, float] = {}
        count = 0
        for _ in range(epochs):
            for idx in minibatch_indices(batch.batch_size[0], minibatches, self.shuffle):
                stats = self.accumulate(batch[idx], loss_of)
                self.reduce_gradients()
                stats[f"{prefix}/grad_norm"] = clip_and_step(
                    self.model, self.optimizer, self.optim_cfg.grad_clip
                )
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                count += 1
        out = {key: value / count for key, value in sums.items()}
        out[f"{prefix}/lr"] = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        return out

    def accumulate(self, mb: Batch, loss_of) -> dict[str, float]:
        """Backward of the minibatch's loss, micro-batch by micro-batch; its stats."""
        spec = self.micro_batching.scaled(self.micro_batch_workers)
        parts = micro_batches(mb, spec)
        stats: dict[str, float] = {}
        backward = False
        for part in parts:
            micro = mb if len(parts) == 1 else trim_padding(mb[part])
            loss_weight, stat_weight = (1.0, 1.0)
            if len(parts) > 1:
                loss_weight, stat_weight = stat_weights(micro, mb, self.loss_agg)
            with autocast(self.precision):
                loss, micro_stats = loss_of(micro)
            if loss.requires_grad:
                (loss * loss_weight if loss_weight != 1.0 else loss).backward()
                backward = True
            for key, value in micro_stats.items():
                weight = loss_weight if key.startswith("loss/") else stat_weight
                stats[key] = stats.get(key, 0.0) + float(value) * weight
        if not backward:  # the loss is constant in θ: the optimizer still steps, on zeros
            self.zero_gradients()
        return stats

    def reduce_gradients(self) -> None:
        """Between backward and the optimizer step: a data-parallel runtime averages the
        gradients over its workers here (runtime/ray/data_parallel.py); alone, nothing."""

    def zero_gradients(self) -> None:
        for p in self.model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "shuffle": self.shuffle.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle"])
