"""Every Plan the planner considers (ReaLHF's ``enumerate``): strategies × group splits ×
data-parallel sizes × sharding and shard sizes × micro-batch sizes × gradient checkpointing × generation waves × offload.
The offline stages (sft, rm, dpo) train one model and sample nothing: Flatten over ``dp`` of
the slots × sharding × micro-batch × checkpointing (``offline_placements``).

The space is small enough to walk exhaustively: Separate tries every generation split up to
64 slots and whole nodes beyond; hybrid shard sizes are the powers of two that divide dp;
smaller dp sizes are tried on groups of at most 8 slots (a CPU slot's worker has a per-call
overhead that more workers do not remove); micro-batches are the worker's whole share and
its halvings down to 1, where activations must shrink to fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from math import ceil

from placerl.placement.cost.workload import Workload
from placerl.placement.plan import strategies
from placerl.placement.plan.plan import Cluster, Plan, RolePlacement, Sharding
from placerl.types import Role

GEN_WAVES = (1, 2, 4, 8)
EXHAUSTIVE_SPLITS = 64  # every Separate split up to this many slots; whole nodes beyond


@dataclass(frozen=True)
class Candidate:
    plan: Plan
    micro_batch: int | None = None  # rows per forward/backward call; None: the whole share
    checkpointing: bool = False
    gen_waves: int = 1  # generation in sequential waves of rows, to fit the KV cache
    offload: bool = False  # idle colocated models in host memory (GPU)
    gen_tp: int = 1  # tensor-parallel GPUs per generation engine (vLLM-class engines)

    def applied(self, w: Workload) -> Workload:
        """The workload with this candidate's settings."""
        return w.with_(
            micro_batch=self.micro_batch,
            checkpointing=self.checkpointing,
            gen_waves=self.gen_waves,
            offload=self.offload,
            gen_tp=self.gen_tp,
        )

    @property
    def name(self) -> str:
        p = self.plan
        parts = [p.strategy]
        if p.strategy == "separate":
            parts.append(f"gen={p.group('gen').size}/{len(p.slots)}")
        trained = p.roles.get(Role.ACTOR)
        if trained is not None:
            offline = Role.ROLLOUT not in p.roles and p.strategy != "local"  # sft, rm, dpo
            if offline or trained.dp_size < p.group_of(Role.ACTOR).size:
                parts.append(f"dp={trained.dp_size}")
            if trained.sharding == Sharding.HYBRID:
                parts.append(f"hybrid({trained.shard_size})")
            elif trained.sharding == Sharding.FULL:
                parts.append("full")
        if self.micro_batch:
            parts.append(f"mb={self.micro_batch}")
        if self.checkpointing:
            parts.append("ckpt")
        if self.gen_waves > 1:
            parts.append(f"waves={self.gen_waves}")
        if self.offload:
            parts.append("offload")
        if self.gen_tp > 1:
            parts.append(f"tp={self.gen_tp}")
        return " ".join(parts)


def generation_splits(cluster: Cluster) -> list[int]:
    n = cluster.size
    if n <= EXHAUSTIVE_SPLITS:
        return list(range(1, n))
    per = max(1, max(s.index for s in cluster.slots) + 1)
    return sorted({k for k in range(per, n, per)} | {n // 2})


def base_plans(w: Workload, cluster: Cluster) -> Iterator[Plan]:
    """Flatten, Interleave (two frozen models to split) and every Separate split."""
    common = dict(rule_reward=w.rule_reward, max_staleness=w.max_staleness)
    # the rollout of Flatten/Interleave samples with the trainer's weights: the Ray runtime
    # runs them on-policy (staleness 0 is always within the configured bound)
    on_policy = dict(rule_reward=w.rule_reward, max_staleness=0)
    roles = w.roles
    yield strategies.flatten(roles, cluster, **on_policy)
    frozen = [r for r in (Role.REFERENCE, Role.REWARD) if r in w.shapes]
    if len(frozen) == 2 and cluster.size >= 2:
        yield strategies.interleave(roles, cluster, **on_policy)
    if Role.ROLLOUT in roles and cluster.size >= 2:
        for gen in generation_splits(cluster):
            yield strategies.separate(roles, cluster, generation_slots=gen, **common)


def _powers_of_two_dividing(n: int) -> list[int]:
    return [s for s in (2**k for k in range(1, 12)) if s < n and n % s == 0]


def _shardings(dp: int) -> list[tuple[Sharding, int | None]]:
    out: list[tuple[Sharding, int | None]] = [(Sharding.NONE, None)]
    if dp > 1:
        out.append((Sharding.FULL, None))
        out += [(Sharding.HYBRID, s) for s in _powers_of_two_dividing(dp)]
    return out


def _dp_sizes(group_size: int) -> list[int]:
    if group_size > 8:
        return [group_size]
    return [d for d in range(group_size, 0, -1) if group_size % d == 0]


def with_model_placement(
    plan: Plan, w: Workload, dp: int | None, sharding: Sharding, shard_size: int | None
) -> Plan:
    """The plan with its model roles re-sharded (never the rollout or a rule reward) and, when
    ``dp`` is given, every role on the actor's groups at data-parallel size ``dp``."""
    actor_groups = plan.roles[Role.ACTOR].groups
    roles = {}
    for role, p in plan.roles.items():
        new_dp = dp if dp is not None and p.groups == actor_groups else p.dp_size
        model = role != Role.ROLLOUT and not (role == Role.REWARD and w.rule_reward)
        mode, size = (sharding, shard_size) if model else (Sharding.NONE, None)
        if new_dp == 1 or (mode == Sharding.HYBRID and (size >= new_dp or new_dp % size)):
            mode, size = Sharding.NONE, None
        roles[role] = RolePlacement(p.group, new_dp, mode, size, p.also_on)
    return replace(plan, roles=roles)


def micro_batches(w: Workload, dp: int) -> list[int | None]:
    """The worker's whole share and its halvings, in multiples of ``w.unit_rows`` (a
    preference pair is never split)."""
    share = ceil(w.rows / max(1, dp) / max(1, w.minibatches))
    unit = max(1, w.unit_rows)
    sizes: list[int | None] = [None]
    m = share // 2 // unit * unit
    while m >= unit and len(sizes) < 5:
        sizes.append(m)
        m = m // 2 // unit * unit
    return sizes


def tensor_parallel_sizes(plan: Plan, w: Workload) -> list[int]:
    """Engine TP degrees: 1 for placerl's sampler; powers of two within a node that divide the
    rollout's dp for a vLLM-class engine on GPUs."""
    if (
        w.engine != "vllm"
        or plan.groups[0].slots[0].kind != "gpu"
        or Role.ROLLOUT not in plan.roles
    ):
        return [1]
    dp = plan.roles[Role.ROLLOUT].dp_size
    per_node = max(s.index for s in plan.slots) + 1
    return [t for t in (1, 2, 4, 8) if t <= per_node and dp % t == 0]


def offline_placements(w: Workload, cluster: Cluster) -> Iterator[tuple[Plan, int]]:
    """sft, rm, dpo: Flatten over the first ``dp`` slots (every one a trainer rank, as the
    offline runtime starts one per slot of its Plan), each sharding and shard size."""
    for dp in _dp_sizes(cluster.size):
        for sharding, size in _shardings(dp):
            slots = Cluster(cluster.slots[:dp])
            yield strategies.flatten(w.roles, slots, sharding=sharding, shard_size=size), dp


def placements(w: Workload, cluster: Cluster) -> Iterator[tuple[Plan, int]]:
    """Every (plan, trained dp) before micro-batch and checkpointing choices."""
    if w.offline:
        yield from offline_placements(w, cluster)
        return
    for base in base_plans(w, cluster):
        group = base.group_of(Role.ACTOR).size
        for dp in _dp_sizes(group):
            for sharding, size in _shardings(dp):
                yield with_model_placement(base, w, dp if dp != group else None, sharding, size), dp


def candidates(w: Workload, cluster: Cluster) -> Iterator[Candidate]:
    """The whole space, for tests and counting; ``search`` walks it with pruning."""
    for plan, dp in placements(w, cluster):
        for mb in micro_batches(w, dp):
            for ckpt in (False, True):
                for waves in GEN_WAVES:
                    for offload in (False, True):
                        for tp in tensor_parallel_sizes(plan, w):
                            yield Candidate(plan, mb, ckpt, waves, offload, tp)
