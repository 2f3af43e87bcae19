"""The phases of one step of a Plan, each with its seconds and the groups it occupies.

Only the roles the algorithm has produce phases (GRPO without a KL term has no ``reference``
and no ``values``). A phase's seconds are those of one of its role's workers (they run in
parallel on equal shares, rows split ``ceil(rows / dp)``), plus ``rpc_latency`` for the
controller's call when the runtime has workers. Which phases exist:

- ``generate`` (rollout: one response a row, or episodes, ``cost/episodes.py``) · ``score`` (reward: a rule per row, or a reward-model forward) ·
  ``reference`` · ``values`` (critic forward) — the experience; online DPO and RSO take the
  reference's log-probs of the pairs only, and train on the pairs (``Workload.learning``);
  with DAPO's dynamic sampling each runs once per batch sampled (``Workload.gen_rounds``);
- ``old_log_probs`` (actor forward): only when π_old must be recomputed — a stale batch
  (``max_staleness > 0`` with a rollout copy) or ``recompute_log_probs: always`` — and the
  update is not single-pass (1 epoch × 1 minibatch takes π_old from its own forward);
- ``sync_guard`` (actor forward): where the rollout samples from a copy that syncs and π_old
  is not recomputed, the guard's forward of the first batch after each sync (one per sync
  period);
- ``update`` (actor) and ``critic_update``: compute, optimizer, gradient communication;
- ``sync``: the policy's weights to a rollout that does not share the actor's workers
  (Separate), or a gather of a sharded actor for a colocated rollout; under Flatten with
  ``max_staleness > 0`` the copy into the local shadow;
- ``offload``: moving colocated models to host memory and back (``placement.offload``, GPU);
- ``controller``: the controller's own work outside every call (``step_overhead``, or
  ``worker_step_overhead`` with runtime workers): on the controller, not on a group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import ceil

from placerl.placement.cost import collectives, episodes
from placerl.placement.cost import time as ct
from placerl.placement.cost.machine import Machine
from placerl.placement.cost.memory import (
    on_same_workers,
    shard_factor,
    slot_roles,
    trained_state_bytes,
)
from placerl.placement.cost.workload import Workload
from placerl.placement.plan.plan import Plan, Sharding
from placerl.types import Role

EXPERIENCE = ("score", "reference", "values")
LEARN = ("update", "critic_update")
CONTROLLER = "controller"  # the pseudo-group of the controller's own work


@dataclass(frozen=True)
class Phase:
    name: str
    role: Role
    groups: tuple[str, ...]
    seconds: float


def rollout_shares_actor(plan: Plan) -> bool:
    """The rollout samples from the actor's own workers (Flatten, Interleave)."""
    if Role.ROLLOUT not in plan.roles or Role.ACTOR not in plan.roles:
        return False
    return on_same_workers(plan, Role.ROLLOUT, Role.ACTOR)


def stale(plan: Plan, w: Workload) -> bool:
    """Batches can lag the policy: a rollout copy with ``max_staleness > 0``."""
    return plan.max_staleness > 0 and Role.ROLLOUT in plan.roles


def _nodes(plan: Plan, role: Role) -> int:
    groups = [plan.group(g) for g in plan.roles[role].groups]
    return (
        len({s.node for g in groups for s in (g.slots[0], g.slots[-1])})
        if all(plan.roles[role].dp_size == sum(g.size for g in groups) for _ in (0,))
        else len({s.node for s in plan.worker_slots(role)})
    )


def _update_s(plan: Plan, role: Role, w: Workload, m: Machine, micro, ckpt) -> float:
    p = plan.roles[role]
    shape = w.shapes[role]
    slot = plan.worker_slots(role)[0]
    rows = ceil(w.rows / p.dp_size)
    shards = shard_factor(p)
    compute = ct.train_compute_s(shape, m, slot, w, rows, micro, ckpt)
    calls = w.epochs * w.minibatches * ct.micro_batches(ceil(rows / w.minibatches), micro)
    comm = collectives.grad_comm_s(
        ct.trained_params(shape, w),
        m,
        p.dp_size,
        p.sharding.value,
        p.shard_size,
        _nodes(plan, role),
        w.epochs * w.minibatches,
        calls,
        w.dtype_bytes,
    )
    # FSDP prefetches the next block's gather during compute on a GPU; DDP here reduces after
    # the backward and gloo on CPU shares the cores: exposed.
    overlapped = m.kind == "gpu" and p.sharding != Sharding.NONE
    work = max(compute, comm) if overlapped else compute + comm
    on_worker = m.worker_update_factor if plan.strategy != "local" else 1.0
    return max(0.0, work + ct.optimizer_s(shape, m, slot, w, shards)) * on_worker


def _forward_s(plan: Plan, role: Role, w: Workload, m: Machine, micro) -> float:
    p = plan.roles[role]
    rows = ceil(w.rows / p.dp_size)
    slot = plan.worker_slots(role)[0]
    t = ct.forward_s(w.shapes[role], m, slot, w, rows, micro)
    if p.sharding != Sharding.NONE:  # gather the parameters once per micro-batch
        nbytes = w.shapes[role].params * w.dtype_bytes
        s = shard_factor(p)
        bw = collectives.link_bw(m, _nodes(plan, role))
        calls = ct.micro_batches(rows, micro)
        t += calls * collectives.all_gather_s(nbytes, s, bw, m.collective_latency)
    return t


def _sync_s(plan: Plan, w: Workload, m: Machine) -> float:
    if Role.ROLLOUT not in plan.roles or Role.ACTOR not in plan.roles:
        return 0.0
    shape = w.shapes[Role.ACTOR]
    actor = plan.roles[Role.ACTOR]
    if rollout_shares_actor(plan):
        if actor.sharding != Sharding.NONE:  # gather the whole policy for sampling
            nbytes = shape.params * w.dtype_bytes
            bw = collectives.link_bw(m, _nodes(plan, Role.ACTOR))
            return collectives.all_gather_s(nbytes, shard_factor(actor), bw, m.collective_latency)
        if plan.max_staleness > 0:  # the local shadow copy
            return ct.copy_s(shape, m, w)
        return 0.0
    nodes = {s.node for s in (*plan.worker_slots(Role.ACTOR), *plan.worker_slots(Role.ROLLOUT))}
    return ct.sync_s(shape, m, w, cross_node=len(nodes) > 1)


def has_rollout_copy(plan: Plan) -> bool:
    """The rollout samples from a copy of the policy that syncs (Separate, or a lagging
    rollout beside the trainer), not from the actor's own module."""
    if Role.ROLLOUT not in plan.roles or Role.ACTOR not in plan.roles:
        return False
    return not rollout_shares_actor(plan) or plan.max_staleness > 0


def sync_period(plan: Plan, w: Workload) -> int:
    """Updates between two syncs: every step on-policy, else ``min(sync_every, staleness)``."""
    if plan.max_staleness <= 0:
        return 1
    return max(1, min(w.sync_every, plan.max_staleness))


def step_phases(
    plan: Plan, w: Workload, m: Machine, micro_batch: int | None = None, checkpointing=None
) -> list[Phase]:
    """Every phase of one step of ``plan``, in controller order."""
    ckpt = w.checkpointing if checkpointing is None else checkpointing
    micro = micro_batch if micro_batch is not None else w.micro_batch
    rpc = 0.0 if plan.strategy == "local" else m.rpc_latency
    roles = plan.roles
    out = _experience_phases(plan, w, m, micro, rpc)
    add = _adder(out, plan, rpc)
    recompute = stale(plan, w) or w.recompute == "always"
    learn = w.learning  # the update's rows
    if Role.ROLLOUT in roles and recompute and not w.single_pass and w.policy_gradient:
        add("old_log_probs", Role.ACTOR, _forward_s(plan, Role.ACTOR, learn, m, micro))
    if has_rollout_copy(plan) and not any(p.name == "old_log_probs" for p in out):
        # the sync guard's forward on the first batch after a sync (runtime/sync/guard.py):
        # where π_old is recomputed anyway it reads that one
        guard = _forward_s(plan, Role.ACTOR, w, m, micro) / sync_period(plan, w)
        add("sync_guard", Role.ACTOR, guard)
    add("update", Role.ACTOR, _update_s(plan, Role.ACTOR, learn, m, micro, ckpt))
    if Role.CRITIC in roles:
        add("critic_update", Role.CRITIC, _update_s(plan, Role.CRITIC, w, m, micro, ckpt))
    sync = _sync_s(plan, w, m)
    if sync:
        add("sync", Role.ACTOR, sync)
    offload = _offload_s(plan, w, m)
    if offload:
        out.append(Phase("offload", Role.ACTOR, tuple(g.name for g in plan.groups), offload))
    own = m.step_overhead if plan.strategy == "local" else m.worker_step_overhead
    if own:
        out.append(Phase("controller", Role.ACTOR, (CONTROLLER,), own))
    return out


def _experience_phases(plan: Plan, w: Workload, m: Machine, micro: int, rpc: float) -> list[Phase]:
    """The phases that make a step's experience, in controller order: generate, score, the
    reference's and the critic's forwards."""
    roles = plan.roles
    out: list[Phase] = []
    add = _adder(out, plan, rpc)
    rounds = w.gen_rounds  # every batch sampled is scored (DAPO's dynamic sampling)
    if Role.ROLLOUT in roles:
        p = roles[Role.ROLLOUT]
        slot = plan.worker_slots(Role.ROLLOUT)[0]
        rows = ceil(w.rows / p.dp_size)
        add(
            "generate",
            Role.ROLLOUT,
            episodes.generate_s(w.shapes[Role.ROLLOUT], m, slot, w, rows),
            rounds,
        )
    if Role.REWARD in roles:
        if w.rule_reward:
            per_row = ceil(w.rows / roles[Role.REWARD].dp_size) * m.reward_per_row
            add("score", Role.REWARD, per_row, rounds)
        else:
            add("score", Role.REWARD, _forward_s(plan, Role.REWARD, w, m, micro), rounds)
    ref = w.referenced  # the pairs' rows (online DPO, RSO), the rollout's, or none
    if Role.REFERENCE in roles and ref is not None and w.reference_share > 0:
        # a cached offline reference runs on a share of the steps only (cost/offline.py)
        one = _forward_s(plan, Role.REFERENCE, ref, m, micro) + rpc
        seconds = rounds * w.reference_share * one
        out.append(Phase("reference", Role.REFERENCE, roles[Role.REFERENCE].groups, seconds))
    if Role.CRITIC in roles and Role.ROLLOUT in roles:
        add("values", Role.CRITIC, _forward_s(plan, Role.CRITIC, w, m, micro), rounds)
    return out


def _adder(out: list[Phase], plan: Plan, rpc: float) -> Callable[..., None]:
    """``add(name, role, seconds, calls=1)``: append to ``out`` a phase of ``calls`` calls of
    ``seconds`` each on ``role``'s groups, each call paying ``rpc``."""

    def add(name: str, role: Role, seconds: float, calls: int = 1) -> None:
        out.append(Phase(name, role, plan.roles[role].groups, calls * (seconds + rpc)))

    return add


def _offload_s(plan: Plan, w: Workload, m: Machine) -> float:
    """The largest per-slot traffic of moving the non-running models out and back."""
    if not w.offload or m.kind != "gpu":
        return 0.0
    worst = 0.0
    for _, roles in slot_roles(plan, distinct=True):
        models = [r for r in roles if r in w.shapes and r != Role.ROLLOUT]
        if len(models) < 2:
            continue
        total = 0.0
        for r in models:
            shards = shard_factor(plan.roles[r])
            if r in (Role.ACTOR, Role.CRITIC):
                total += sum(trained_state_bytes(w.shapes[r], w, shards).values())
            else:
                total += w.shapes[r].params * w.dtype_bytes / shards
        worst = max(worst, ct.offload_s(total, m))
    return worst
