"""``Collectives`` over torch.distributed: one rank of a data-parallel offline trainer.

The offline trainer (``runtime/offline.py``) asks its ranks for a few things only: make the
model ready (FSDP2 shards, or rank 0's weights broadcast so that replicas start equal),
average the gradients (replicas: flat-bucket all-reduce, the same helper the RL roles use;
FSDP reduces in its backward hooks), sum a float, agree on an int, gather the full weights
for evaluation, and read or write full weights and optimizer state for checkpoints. The
optimizer state is keyed by parameter index under every sharding, as in one process.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from placerl.models.lora import is_lora, load_trained_state
from placerl.runtime.ray.data_parallel import (
    average_gradients,
    broadcast_weights,
    shard_model,
    unsharded,
)

BUCKET_ELEMS = 16 * 1024 * 1024  # 64 MB of fp32 gradients per all-reduce


@dataclass
class RankCollectives:
    """This process's rank among the trainer's ``size`` ranks (``group``; ``mesh`` for FSDP)."""

    rank: int
    size: int
    group: Any
    mesh: Any = None
    device: torch.device = torch.device("cpu")

    @property
    def lockstep(self) -> bool:
        return self.mesh is not None

    def prepare(self, model, precision: str, frozen: bool = False) -> None:
        if self.mesh is not None:
            shard_model(model, self.mesh, precision)
            if frozen:  # no optimizer to build first (``optimizer_built``)
                _root_forward(model, self.device)
        else:
            broadcast_weights(model, self.group)

    def optimizer_built(self, model) -> None:
        if self.mesh is not None:
            _root_forward(model, self.device)

    def reduce_gradients(self, model) -> None:
        if self.mesh is None:
            average_gradients(list(model.parameters()), self.group, BUCKET_ELEMS)

    def total(self, value: float) -> float:
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor, group=self.group)
        return float(tensor.item())

    def agree(self, value: int) -> int:
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.long, device=self._comm_device)
        dist.broadcast(tensor, src=dist.get_global_rank(self.group, 0), group=self.group)
        return int(tensor.item())

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def gathered(self, *models) -> contextlib.AbstractContextManager:
        return _gathered(models)

    def full_weights(self, model) -> dict[str, torch.Tensor]:
        if self.mesh is None:
            return {k: v.detach().cpu() for k, v in model.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=options)

    def load_full_weights(self, model, weights: dict[str, torch.Tensor]) -> None:
        if self.mesh is None:
            load_trained_state(model, weights)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=True, strict=not is_lora(model))
        set_model_state_dict(model, weights, options=options)

    def optimizer_state(self, model, optimizer) -> dict:
        if self.mesh is None:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return by_index(
            get_optimizer_state_dict(model, optimizer, options=options), model, optimizer
        )

    def load_optimizer_state(self, model, optimizer, state: dict) -> None:
        if self.mesh is None:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(
            model, optimizer, by_name(state, model, optimizer), options=options
        )


def _param_names(model, optimizer) -> list[str]:
    """The optimizer's parameters by name, in the order ``optimizer.state_dict()`` numbers
    them (FSDP2 shards in place: the names are the unsharded model's)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def by_index(state: dict, model, optimizer) -> dict:
    """A full optimizer state keyed by parameter name (``get_optimizer_state_dict``) keyed by
    index as ``optimizer.state_dict()`` keys it: one checkpoint format for every sharding, so
    a run resumes under another (``strategy: auto`` re-plans between them)."""
    if "param_groups" not in state:  # a rank other than 0: the full state is rank 0's
        return state
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]
    return {"state": {index[n]: v for n, v in state["state"].items()}, "param_groups": groups}


def by_name(state: dict, model, optimizer) -> dict:
    """``by_index``'s inverse (a name-keyed state, as older checkpoints hold, passes)."""
    if any(isinstance(p, str) for g in state["param_groups"] for p in g["params"]):
        return state
    names = _param_names(model, optimizer)
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {names[i]: v for i, v in state["state"].items()}, "param_groups": groups}


@contextlib.contextmanager
def _gathered(models):
    """Full weights for the duration (``unsharded``), then each FSDP root's per-iteration
    state reset: FSDP2 records every forward's module order for its backward prefetch, and
    evaluation runs forwards on rank 0 alone, so without the reset rank 0's next backward
    would prefetch (all-gather) a module its peers do not, and the ranks deadlock."""
    from torch.distributed.fsdp import FSDPModule

    with contextlib.ExitStack() as stack:
        for model in models:
            stack.enter_context(unsharded(model))
        yield
    for model in models:
        if isinstance(model, FSDPModule):
            model.reset_iter_state()


@torch.no_grad()
def _root_forward(model, device: torch.device) -> None:
    """One tiny forward through the root: FSDP2 initialises lazily at its first forward, which
    must be the root's, and the layout check and evaluation run the decoder alone, on
    gathered weights (``models/lm_head.split_lm``). After the optimizer is built, as the RL
    roles do it: built after this forward, the optimizer's state cannot be gathered by name
    (``get_optimizer_state_dict``: KeyError). Collective: every rank runs it."""
    was_training = model.training
    model.eval()
    model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
    model.train(was_training)
