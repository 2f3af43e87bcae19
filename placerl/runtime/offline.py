"""The offline stages' trainer (sft, rm, dpo): one rank's model, optimizer and algorithm.

The same ``OfflineTrainer`` runs in the controller's process (``placement.strategy: local``)
and on each Ray worker of a data-parallel Plan (``runtime/ray/offline.py``); what differs is
its ``Collectives``: nothing to do alone, torch.distributed over the role's ranks on workers
(gradient averaging or FSDP2, a global sum, full weights gathered for evaluation). A step:

    reference sums the share lacks (dpo) → accumulate → gradients averaged → the loss summed
    over ranks (so every rank skips a non-finite step together) → optimizer step

Evaluation runs once: every rank gathers the full weights (a collective under FSDP) and rank 0
alone runs the stage's evaluator, the same code as one process; the others wait.
Checkpoints hold the whole state: full weights (the controller's copy, ``trained_models``) and
the optimizer state by parameter index, whatever the sharding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from placerl.algos.dpo import DPO_KIND, OfflinePreference
from placerl.algos.offline import OfflineKind, Share
from placerl.algos.reward_model import RM_KIND, RewardModelTraining
from placerl.algos.sft import SFT, SFT_KIND, choose_sft_layout
from placerl.config.schema import RunConfig
from placerl.data.collate import pad_token_id
from placerl.models.loading import LoadOptions, load_policy, load_reward_model
from placerl.models.lora import FrozenBase, load_trained_state, with_lora
from placerl.models.micro_batches import micro_batching
from placerl.models.packed import choose_layout
from placerl.models.training import make_optimizer

KINDS: dict[str, OfflineKind] = {"sft": SFT_KIND, "rm": RM_KIND, "dpo": DPO_KIND}


class Collectives(Protocol):
    """What a trainer needs from the ranks it shares a step with."""

    rank: int
    size: int
    lockstep: bool  # every rank must run the same forwards (FSDP-sharded models)

    def prepare(self, model, precision: str, frozen: bool = False) -> None:
        """Before the optimizer is built: shard the model (FSDP), or make replicas equal."""

    def optimizer_built(self, model) -> None:
        """After the trained model's optimizer is built (FSDP: its lazy initialisation)."""

    def reduce_gradients(self, model) -> None: ...

    def total(self, value: float) -> float:
        """``value`` summed over the ranks."""

    def agree(self, value: int) -> int:
        """Rank 0's ``value``, on every rank."""

    def gathered(self, *models) -> contextlib.AbstractContextManager:
        """The models' full weights for the duration (collective under FSDP)."""

    def full_weights(self, model) -> dict[str, torch.Tensor]: ...

    def load_full_weights(self, model, weights: dict[str, torch.Tensor]) -> None: ...

    def optimizer_state(self, model, optimizer) -> dict: ...

    def load_optimizer_state(self, model, optimizer, state: dict) -> None: ...


class OneProcess:
    """``Collectives`` of a trainer alone in its process."""

    rank, size, lockstep = 0, 1, False

    def prepare(self, model, precision: str, frozen: bool = False) -> None:
        pass

    def optimizer_built(self, model) -> None:
        pass

    def reduce_gradients(self, model) -> None:
        pass

    def total(self, value: float) -> float:
        return value

    def agree(self, value: int) -> int:
        return value

    def gathered(self, *models) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def full_weights(self, model) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def load_full_weights(self, model, weights) -> None:
        load_trained_state(model, weights)

    def optimizer_state(self, model, optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state(self, model, optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)


Evaluator = Callable[["OfflineTrainer"], Any]  # rank 0 (or the one process) evaluates


class OfflineTrainer:
    """One rank of an offline stage (see the module docstring)."""

    def __init__(self, algo, kind: OfflineKind, parallel: Collectives, tokenizer, reference=None):
        self.algo, self.kind, self.parallel, self.tokenizer = algo, kind, parallel, tokenizer
        self.reference = reference  # dpo: the frozen reference (None once freed)
        self.eval_reference: torch.Tensor | None = None  # dpo: held-out pairs', rank 0

    @property
    def model(self):
        return self.algo.model

    def reference_sums(self, share: Share) -> torch.Tensor | None:
        """The share's missing reference sums (dpo), computed where its examples are; None
        when it lacked none."""
        if not isinstance(self.algo, OfflinePreference):
            return None
        return self.algo.fill_reference(self.reference, share)

    def train(self, share: Share) -> dict[str, float]:
        """One step on this rank's share; its stats as sums (``algos/offline.py``)."""
        sums = self.algo.accumulate(share)
        self.parallel.reduce_gradients(self.model)
        loss = self.parallel.total(sums[self.kind.loss_key]) if self.kind.loss_key else None
        return sums | self.algo.apply(loss)

    def evaluate(self, evaluator: Evaluator) -> Any:
        """``evaluator(self)`` on rank 0 with the full weights; None on the other ranks."""
        models = [m for m in (self.model, _held(self.reference)) if m is not None]
        with self.parallel.gathered(*dict.fromkeys(models)):
            return evaluator(self) if self.parallel.rank == 0 else None

    def free_reference(self) -> None:
        """Every reference sum training and evaluation need is known: drop the model."""
        self.reference = None

    def weights(self) -> dict[str, torch.Tensor]:
        """The full weights on CPU (collective under FSDP)."""
        return self.parallel.full_weights(self.model)

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.parallel.load_full_weights(self.model, weights)

    def state_dict(self) -> dict:
        """Optimizer (by parameter index, full) and schedule: the same on every rank."""
        optimizer = self.parallel.optimizer_state(self.model, self.algo.optimizer)
        return {"optimizer": optimizer, "scheduler": self.algo.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.parallel.load_optimizer_state(self.model, self.algo.optimizer, state["optimizer"])
        self.algo.scheduler.load_state_dict(state["scheduler"])


def _held(model):
    """The module a reference computes with (a LoRA reference is the actor's own)."""
    return model.lora_model if isinstance(model, FrozenBase) else model


def offline_model(cfg: RunConfig, path: Path):
    """The trained model of an offline stage: a causal LM (sft, dpo) or a reward model (rm),
    with LoRA adapters when ``model.lora`` asks."""
    options = LoadOptions.of(cfg.model)
    if cfg.stage == "rm":
        return with_lora(load_reward_model(path, options=options), cfg.model.lora, "reward_model")
    return with_lora(load_policy(path, options), cfg.model.lora)


def build_trainer(
    cfg: RunConfig, model, tokenizer, policy_path: Path, device, parallel: Collectives
) -> OfflineTrainer:
    """Model on ``device`` (sharded or made equal), optimizer over what it trains, the
    algorithm, and for dpo the reference (with LoRA: the model with its adapter disabled)."""
    model.to(device)
    parallel.prepare(model, cfg.model.precision)
    optimizer, scheduler = make_optimizer(model.parameters(), cfg.optim, cfg.trainer.steps)
    parallel.optimizer_built(model)
    common = dict(
        grad_clip=cfg.optim.grad_clip,
        precision=cfg.model.precision,
        micro_batching=micro_batching(cfg),
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    kind = KINDS[cfg.stage]
    if cfg.stage == "rm":
        algo = RewardModelTraining(
            model, tokenizer, optimizer, scheduler, max_len=cfg.data.max_len, **common
        )
        return OfflineTrainer(algo, kind, parallel, tokenizer)
    if cfg.stage == "sft":
        layout = _agreed_layout(parallel, [model], choose_sft_layout, cfg.data.packing)
        algo = SFT(
            model,
            tokenizer,
            optimizer,
            scheduler,
            max_len=cfg.data.max_len,
            layout=layout,
            **common,
        )
        return OfflineTrainer(algo, kind, parallel, tokenizer)
    from placerl.roles.build import reference_model

    reference = reference_model(cfg, policy_path, model)
    if not isinstance(reference, FrozenBase):
        reference.to(device)
        parallel.prepare(reference, cfg.model.precision, frozen=True)
    models = layout_models(model, reference)
    layout = _agreed_layout(parallel, models, choose_layout, "auto")
    pad = pad_token_id(tokenizer)
    algo = OfflinePreference(
        model, optimizer, scheduler, cfg.preference, pad_id=pad, layout=layout, **common
    )
    return OfflineTrainer(algo, kind, parallel, tokenizer, reference)


def layout_models(model, reference) -> list:
    """The models whose mask handling decides the packing layout (``choose_layout``). A
    reference of the policy's class computes attention with the same code, so it is not
    checked again: in bf16 its sums would differ from the per-sequence ones by rounding, not
    by a mask it ignores, and the check would fall back to padding for nothing."""
    return [model] if type(reference) is type(model) else [model, reference]


def _agreed_layout(parallel: Collectives, models: list, choose, packing: str) -> str:
    """The layout every rank uses: checked with full weights, rank 0's answer everywhere
    (a rank that picked otherwise would run other forwards than its FSDP peers)."""
    from placerl.data.packing import LAYOUTS

    if packing != "auto":
        return "padded"
    with parallel.gathered(*dict.fromkeys(_held(m) for m in models)):
        layout = choose(*models)
    return LAYOUTS[parallel.agree(LAYOUTS.index(layout))]


class InProcess:
    """The trainer of a ``local`` run: this process, one rank, the controller's own model."""

    world, lockstep = 1, False
    plan = None  # no workers: every model in this process

    def __init__(self, trainer: OfflineTrainer):
        self.trainer = trainer

    def reference(self, shares: list[Share]) -> list[torch.Tensor | None]:
        return [self.trainer.reference_sums(shares[0])]

    def train(self, shares: list[Share]) -> list[dict[str, float]]:
        return [self.trainer.train(shares[0])]

    def evaluate(self, evaluator: Evaluator) -> Any:
        return self.trainer.evaluate(evaluator)

    def free_reference(self) -> None:
        self.trainer.free_reference()

    def pull_weights(self) -> None:  # the controller's model is the trained one
        pass

    def push_weights(self) -> None:
        pass

    def state_dict(self) -> dict:
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.trainer.load_state_dict(state)

    def pop_spans(self) -> list:
        return []

    def close(self) -> None:
        pass
