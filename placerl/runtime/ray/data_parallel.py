"""Data-parallel training of one role over its workers (replicas or FSDP2), and the global loss.

Every worker of a trained role receives the *whole* rollout batch and runs the role's own
``update`` loop (roles/common.py ``TrainedModel.fit``) with the same seeded shuffle, so all
ranks agree on the minibatches; ``ShardedUpdate`` then hands the role's loss function only
this rank's contiguous share of each minibatch and rescales the loss so that the averaged
gradient is the gradient of the *global* minibatch loss:

    token-mean:  L = Σ_all tokens ℓ / N_tokens(minibatch)
    rank r:      L_r = Σ_r ℓ / N_tokens(shard r)            (what the role computes)
    weight:      w_r = W · N_tokens(shard r) / N_tokens(minibatch)

Gradients are then *averaged* over the W ranks, so Σ_r w_r·∇L_r / W is ∇L exactly (up to
summation order). Seq-mean modes use sequences with a valid token instead of tokens. The
reported stats are pre-weighted the same way so that the controller only sums them
(``combine_update_stats``).

Sharding (from the Plan):

- ``none``: replicas. Gradients are averaged by an all-reduce in ``reduce_gradients``, the
  hook ``fit`` calls between backward and the optimizer step, over fixed-size flat buckets in
  parameter order. Not DDP: DDP needs exactly one forward per backward on every rank, and a
  role may run two (a shared prompt prefix, then the responses) or none (a share whose loss
  is constant). The cost is no overlap of communication with the backward pass.
- ``full``: FSDP2's ``fully_shard`` on each transformer block and the root, over the role's
  ranks; ``hybrid``: the same over a 2-D mesh (replicate × shard), sharding inside groups of
  ``shard_size``. FSDP gathers weights in every forward and reduces in every backward, so all
  ranks must run the same forwards: a rank whose share is empty or constant runs 0·f(θ), and
  hosts build sharded actors and references with ``share_prefix=False`` (prompt-prefix
  sharing decides per shard whether to run one forward or two).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from placerl.models.lora import is_lora, load_trained_state
from placerl.models.micro_batches import GROUP_MEAN, loss_denominator
from placerl.models.shared_prefix import distinct_prompts
from placerl.placement.plan.plan import Sharding
from placerl.roles.common import response_log_probs, response_values
from placerl.runtime.ray.batching import shard_slices
from placerl.types import Batch, Field

REPLICATED_SUFFIXES = ("/grad_norm", "/lr")  # identical on every rank: not summed


@dataclass
class DataParallel:
    """This process's place among a role's data-parallel workers."""

    rank: int  # rank among the role's workers
    size: int  # the role's dp_size
    group: Any = None  # torch.distributed ProcessGroup of the role's workers
    mesh: Any = None  # DeviceMesh for FSDP (1-D full, 2-D hybrid); None: replicas
    device: torch.device = torch.device("cpu")

    @property
    def sharded(self) -> bool:
        return self.mesh is not None


def fsdp_mesh(device_type: str, ranks: list[int], sharding: Sharding, shard_size: int | None):
    """FSDP's mesh: 1-D over the ranks (full), or replicate × shard groups (hybrid)."""
    from torch.distributed.device_mesh import DeviceMesh

    ids = torch.tensor(ranks)
    if sharding == Sharding.HYBRID:
        ids = ids.view(-1, shard_size or len(ranks))
        return DeviceMesh(device_type, ids, mesh_dim_names=("replicate", "shard"))
    return DeviceMesh(device_type, ids, mesh_dim_names=("shard",))


def shard_model(model: nn.Module, mesh, precision: str = "fp32") -> nn.Module:
    """FSDP2 in place: each block of every ModuleList (the transformer layers), then the root
    (embeddings, final norm, head). Parameters become DTensors: build optimizers after this.

    ``precision`` bf16: ``mixed_precision_policy`` (torchtitan's, at any mesh size): the
    sharded parameters and the optimizer state stay fp32 (the master weights), each forward
    gathers them cast to bf16, gradients are reduced in fp32."""
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision_policy(precision)
    extra = {} if policy is None else {"mp_policy": policy}
    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, mesh=mesh, **extra)
    fully_shard(model, mesh=mesh, **extra)
    return model


def mixed_precision_policy(precision: str):
    """FSDP2's policy for ``model.precision``: bf16 params, fp32 reduce; None for fp32."""
    if precision != "bf16":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def broadcast_weights(model: nn.Module, group) -> None:
    """Rank 0's parameters and buffers to every rank of ``group`` (replicas start equal)."""
    import torch.distributed as dist

    source = dist.get_global_rank(group, 0)
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=source, group=group)


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def average_gradients(params: Sequence[nn.Parameter], group, bucket_elems: int) -> None:
    """Average ``.grad`` over ``group``'s ranks in place: flat buckets of about
    ``bucket_elems`` values, in parameter order (the same order on every rank). A missing
    gradient counts as zeros, so every rank sends the same buckets."""
    import torch.distributed as dist

    size = dist.get_world_size(group)
    bucket: list[nn.Parameter] = []
    filled = 0
    for param in [p for p in params if p.requires_grad]:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        bucket.append(param)
        filled += param.numel()
        if filled >= bucket_elems:
            _reduce_bucket(bucket, group, size)
            bucket, filled = [], 0
    if bucket:
        _reduce_bucket(bucket, group, size)


def _reduce_bucket(params: list[nn.Parameter], group, size: int) -> None:
    import torch.distributed as dist

    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, group=group)
    flat /= size
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


@contextlib.contextmanager
def unsharded(model: nn.Module) -> Iterator[None]:
    """Gather an FSDP model's full weights for the duration (generation runs a different
    number of forwards on each rank, so per-forward all-gathers would deadlock). A no-op for
    unsharded models. Collective: every rank of the model's mesh must enter it."""
    modules = fsdp_modules(model)
    for m in modules:
        m.unshard()
        m.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True)


def rows_by_prompt(mb: Batch) -> Batch:
    """The minibatch with each prompt's rows next to each other (groups in the order they
    first appear), so that a rank's contiguous share holds whole groups and the shared-prefix
    forward computes each prompt once. A shuffled minibatch otherwise hands every rank a
    sample of almost every prompt: with 16 prompts × 4 samples over 2 ranks, 15 prompts per
    rank instead of 8, +21% forward/backward tokens. Row order changes the loss only by
    summation order; every rank computes the same order from the same minibatch."""
    if mb.batch_dims != 1 or Field.PROMPT_IDS not in mb.keys():  # noqa: SIM118 (TensorDict)
        return mb
    plan = distinct_prompts(mb[Field.PROMPT_IDS], mb[Field.PROMPT_MASK])
    if plan is None:  # no prompt repeats
        return mb
    first, inverse = plan
    order = torch.sort(first[inverse], stable=True).indices
    return mb[order]


class ShardedUpdate:
    """Mixin for ActorWorker / CriticWorker: data-parallel ``update`` (see module doc).

    ``cls(model, *args, dp=DataParallel(...), **kwargs)``: with ``dp.mesh`` the model is
    FSDP-sharded before the role builds its optimizer (over the sharded parameters);
    otherwise rank 0's weights are broadcast, so every replica starts equal.
    """

    dp: DataParallel
    bucket_elems = 16 * 1024 * 1024  # 64 MB of fp32 gradients per all-reduce

    def __init__(self, model: nn.Module, *args, dp: DataParallel, **kwargs):
        self.dp = dp
        self.module = model.to(dp.device)
        if dp.sharded:
            shard_model(model, dp.mesh, kwargs.get("precision", "fp32"))
        else:
            broadcast_weights(model, dp.group)
        super().__init__(model, *args, **kwargs)
        self._loss_agg = "token-mean"

    @property
    def micro_batch_workers(self) -> int:  # a micro-batch is cut into dp.size rank shares
        return self.dp.size

    def update(self, batch: Batch, objective, epochs: int = 1, minibatches: int = 1):
        self._loss_agg = objective.loss_agg
        return super().update(batch, objective, epochs, minibatches)

    def fit(self, batch: Batch, loss_of, epochs: int, minibatches: int, prefix: str):
        return super().fit(batch, self._share_of(loss_of), epochs, minibatches, prefix)

    def reduce_gradients(self) -> None:
        if not self.dp.sharded:  # FSDP reduce-scatters in its backward hooks
            average_gradients(list(self.model.parameters()), self.dp.group, self.bucket_elems)

    def _share_of(self, loss_of):
        """``loss_of`` on this rank's share of a minibatch, weighted to the global loss."""
        dp, agg = self.dp, self._loss_agg

        def share_loss(mb: Batch):
            mb = rows_by_prompt(mb)
            part = mb[shard_slices(mb.batch_size[0], dp.size)[dp.rank]]
            mask, part_mask = mb[Field.RESPONSE_MASK], part[Field.RESPONSE_MASK]
            total, mine = loss_denominator(mask, agg), loss_denominator(part_mask, agg)
            loss, stats = loss_of(part) if part.batch_size[0] else (torch.zeros(()), {})
            if dp.sharded and not loss.requires_grad:  # FSDP: join the forward and backward
                loss = self.zero_loss(part if part.batch_size[0] else mb[:1])
            weight = dp.size * mine / max(total, 1.0)
            tokens = float(part_mask.sum()) / max(float(mask.sum()), 1.0)
            if agg == GROUP_MEAN:  # a grouped objective's stats are means over rows too
                tokens = mine / max(total, 1.0)
            share = {
                k: v * (mine / max(total, 1.0) if k.startswith("loss/") else tokens)
                for k, v in stats.items()
            }
            return loss * weight, share

        return share_loss

    def zero_loss(self, mb: Batch) -> torch.Tensor:
        """0·f(θ) through the model: zero gradients, but every FSDP collective joined."""
        raise NotImplementedError

    def weights(self) -> dict[str, torch.Tensor]:
        """The full (unsharded) state dict on CPU. Collective under FSDP."""
        if not self.dp.sharded:
            return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.module, options=options)

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load full weights (of a LoRA model: its adapters and trained heads only)."""
        if not self.dp.sharded:
            load_trained_state(self.module, weights)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=True, strict=not is_lora(self.module))
        set_model_state_dict(self.module, weights, options=options)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.dp.sharded:  # DTensor states: gather the full, name-keyed optimizer state
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            state["optimizer"] = get_optimizer_state_dict(
                self.module, self.optimizer, options=options
            )
        return state

    def load_state_dict(self, state: dict) -> None:
        if not self.dp.sharded:
            super().load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        optim = by_name(state["optimizer"], self.module)
        set_optimizer_state_dict(self.module, self.optimizer, optim, options=options)
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle"])


def by_name(optim: dict, module: torch.nn.Module) -> dict:
    """An optimizer state keyed by parameter name, as a sharded model loads it. A checkpoint
    of an unsharded run (another Plan: ``strategy: auto`` switches between them) keys it by
    position in the optimizer, which is the order of the trained parameters."""
    groups = optim.get("param_groups") or []
    if not groups or not groups[0]["params"] or isinstance(groups[0]["params"][0], str):
        return optim
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    return {
        "state": {names[i]: s for i, s in optim["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in groups],
    }


class ShardedActorMixin(ShardedUpdate):
    def fit_grouped(self, batch: Batch, objective, epochs: int = 1, minibatches: int = 1):
        """Like ``update``: each rank takes its contiguous rows (whole groups) of every
        minibatch, weighted by its share of the rows, the grouped objective's denominator."""
        self._loss_agg = GROUP_MEAN
        return super().fit_grouped(batch, objective, epochs, minibatches)

    def zero_loss(self, mb: Batch) -> torch.Tensor:
        flat = mb.reshape(-1)  # a grouped batch ([g, n]) as its rows
        log_probs, _ = response_log_probs(
            self.model, flat, self.temperature, share_prefix=self.share_prefix
        )
        return 0.0 * log_probs.sum()


class ShardedCriticMixin(ShardedUpdate):
    def zero_loss(self, mb: Batch) -> torch.Tensor:
        return 0.0 * response_values(self.model, mb).sum()


def combine_update_stats(per_rank: Sequence[dict[str, float]]) -> dict[str, float]:
    """The global stats of one update from each rank's pre-weighted ones: sums, except the
    replicated values (gradient norm, learning rate), taken from rank 0. A stat that only
    some ranks report (e.g. a share of skipped samples) is summed over those."""
    keys = list(dict.fromkeys(k for stats in per_rank for k in stats))
    out: dict[str, float] = {}
    for key in keys:
        if key.endswith(REPLICATED_SUFFIXES):
            out[key] = next(stats[key] for stats in per_rank if key in stats)
        else:
            out[key] = sum(stats.get(key, 0.0) for stats in per_rank)
    return out
