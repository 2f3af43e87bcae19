"""Weight sync between Ray workers: who takes part, each worker's part, the controller's part.

The rollout samples with the actor's own module wherever it can (its slot hosts an actor
worker, and the actor is replicated or sharded over exactly the rollout's workers): nothing to
sync. Every other rollout worker — under Separate, or wherever the rollout may lag the trainer
(``max_staleness`` ≥ 1, a frozen proposal) — holds a copy of its own, which the actor's rank 0
broadcasts to over a dedicated group (FSDP actor ranks gather the full weights first).
``sync_ranks`` says who, from the Plan alone, so every process agrees without talking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from placerl.models.lora import sync_view
from placerl.placement.plan.plan import Plan, Sharding
from placerl.runtime.sync.guard import check_arrival
from placerl.runtime.sync.transport import (
    DEFAULT_BUCKET_MB,
    SyncStats,
    Weights,
    broadcast_weights,
    copy_weights,
    fingerprint,
    named_tensors,
)
from placerl.types import Role


@dataclass(frozen=True)
class SyncRanks:
    """World ranks taking part in a trainer → rollout sync."""

    source: int  # the actor's rank 0: it sends
    receivers: tuple[int, ...]  # rollout workers holding their own copy of the policy
    gatherers: tuple[int, ...]  # actor ranks that gather the full weights first (FSDP), or source

    @property
    def group_ranks(self) -> tuple[int, ...]:
        """Members of the dedicated sync group (source first)."""
        return (self.source, *(r for r in self.receivers if r != self.source))

    @property
    def participants(self) -> tuple[int, ...]:
        return tuple(sorted({*self.gatherers, *self.receivers, self.source}))


def role_ranks(plan: Plan, role: Role) -> list[int]:
    """World ranks of the role's data-parallel workers, in role-rank order."""
    return [plan.slots.index(s) for s in plan.worker_slots(role)]


def sync_ranks(plan: Plan, lagging: bool = False) -> SyncRanks | None:
    """Who syncs under ``plan``; None when every rollout worker samples with the actor's own
    module. ``lagging``: the rollout may lag the trainer, so every rollout worker holds a copy."""
    if Role.ACTOR not in plan.roles or Role.ROLLOUT not in plan.roles:
        return None
    actor, rollout = role_ranks(plan, Role.ACTOR), role_ranks(plan, Role.ROLLOUT)
    sharded = plan.roles[Role.ACTOR].sharding != Sharding.NONE and len(actor) > 1
    shares = [not lagging and r in actor and (rollout == actor or not sharded) for r in rollout]
    receivers = tuple(r for r, shared in zip(rollout, shares, strict=True) if not shared)
    if not receivers:
        return None
    return SyncRanks(actor[0], receivers, tuple(actor) if sharded else (actor[0],))


def sync_on_host(
    rank: int,
    ranks: SyncRanks,
    group: dist.ProcessGroup | None,
    *,
    source: Weights | None = None,
    rollout_model: nn.Module | None = None,
    bucket_mb: float = DEFAULT_BUCKET_MB,
    device: torch.device | None = None,
) -> SyncStats | None:
    """One worker's part of a sync; every rank in ``ranks.participants`` must call it.

    ``source`` is what the source rank sends (the actor's ``sync_view``, or its gathered full
    weights); ``rollout_model`` this worker's own rollout copy (None when it shares the actor's
    module); ``group`` the dedicated group over ``ranks.group_ranks`` (None outside it).
    """
    copy = sync_view(rollout_model) if rollout_model is not None else None
    if rank == ranks.source:
        stats = broadcast_weights(source, rank, group, bucket_mb, device)
        if copy is not None:  # a copy on the source's own slot (sharded actor, lagging rollout)
            local = copy_weights(source, copy)
            if local.fingerprint is not None:
                sent = fingerprint([t for _, t in named_tensors(source)])
                check_arrival(sent, {"the rollout copy beside the trainer": local.fingerprint})
        return stats
    if rank in ranks.receivers:
        return broadcast_weights(copy, ranks.source, group, bucket_mb, device)
    return None


class RemoteRolloutSync:
    """The controller's side of syncs to rollout workers: the pipeline's ``RolloutSync``.

    ``call_hosts(ranks, method, *args)`` runs a worker-host method on those world ranks at
    once and returns their results in order (the runtime's business; no Ray import here).
    The hosts need ``sync_rollout_weights(bucket_mb)`` (calling ``sync_on_host``), and
    ``weights(role)`` / ``load_weights(role, weights)`` for checkpoints.
    """

    def __init__(self, ranks: SyncRanks, call_hosts, bucket_mb: float = DEFAULT_BUCKET_MB):
        self.ranks, self.call_hosts, self.bucket_mb = ranks, call_hosts, bucket_mb

    def sync(self) -> SyncStats:
        ranks = self.ranks.participants
        stats = dict(zip(ranks, self.call_hosts(ranks, "sync_rollout_weights", self.bucket_mb)))
        sent = stats[self.ranks.source]
        arrived = {
            f"the rollout worker of rank {r}": stats[r].fingerprint
            for r in self.ranks.receivers
            if r != self.ranks.source
        }
        check_arrival(sent.fingerprint, arrived)
        return sent

    def rollout_state(self) -> dict[str, Tensor]:
        return self.call_hosts(self.ranks.receivers[:1], "weights", Role.ROLLOUT.value)[0]

    def load_rollout_state(self, state: dict[str, Tensor]) -> None:
        self.call_hosts(self.ranks.receivers, "load_weights", Role.ROLLOUT.value, state)
