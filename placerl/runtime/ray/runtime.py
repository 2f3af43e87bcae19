"""The Ray runtime: a Plan carried out by one worker process per device slot.

``RayRuntime`` starts the workers (``group.py``), builds each slot's roles there
(``host.py``), and gives the controller ``Roles`` whose members are handles with the local
roles' methods (``handles.py``): the algorithms run unchanged. It also keeps

- the controller's *mirrors* of the trained models (the stage's policy, a critic copy), which
  evaluation and checkpoints read: ``pull_weights`` refreshes them from rank 0 when an update
  happened since, ``push_weights`` loads them into the workers after a restore;
- the workers' timeline spans, handed to the controller's timer by ``pop_spans``;
- under Separate, the trainer → rollout weight sync (``weight_syncer``): a broadcast from the
  actor's rank 0 to the rollout copies over a dedicated torch.distributed group, driven by
  the experience pipeline (``placerl.runtime.pipeline``), the one place that decides when;
- ``workers.json`` in the run directory: rank, slot, roles and pid of every worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ray

from placerl.algos.rollout_phase import Roles
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.models.loading import LoadOptions, load_value_model
from placerl.models.lora import with_lora
from placerl.placement.plan.plan import Plan
from placerl.runtime.local import critic_path, sampling_params
from placerl.runtime.ray.group import CallInfo, WorkerGroup, connect
from placerl.runtime.ray.handles import (
    ActorHandle,
    CriticHandle,
    ReferenceHandle,
    RewardHandle,
    RoleClient,
    RolloutHandle,
    TrainedHandle,
)
from placerl.runtime.ray.host import HostSpec, role_ranks, rollout_shares_actor
from placerl.runtime.weight_sync import RemoteRolloutSync, separate_sync_ranks
from placerl.timing import Span
from placerl.types import Role

WORKERS_FILE = "workers.json"


def roles_of(algorithm) -> tuple[Role, ...]:
    roles = [Role.ACTOR, Role.ROLLOUT]
    if algorithm.needs_critic:
        roles.append(Role.CRITIC)
    roles.append(Role.REWARD)
    if algorithm.needs_reference:
        roles.append(Role.REFERENCE)
    return tuple(r for r in Role if r in roles)


def start_ray_runtime(cfg: RunConfig, policy_path: Path, tokenizer, policy, algorithm):
    """Join or start Ray first (planning may ask it for the cluster), then plan and start."""
    from placerl.placement.from_config import plan_from_config

    owns_ray = connect(cfg.placement.ray_address)
    try:
        plan = plan_from_config(cfg)
        return RayRuntime(cfg, plan, policy_path, tokenizer, policy, algorithm, owns_ray)
    except BaseException:
        if owns_ray:
            ray.shutdown()
        raise


class RayRuntime:
    """Workers for every slot of ``plan``; ``roles`` are handles to them."""

    def __init__(
        self,
        cfg: RunConfig,
        plan: Plan,
        policy_path: Path,
        tokenizer,
        policy,
        algorithm,
        owns_ray: bool = False,
    ):
        needed = roles_of(algorithm)
        missing = [r.value for r in needed if r not in plan.roles]
        if missing:
            raise UserError(
                f"the {plan.strategy} plan places no {', '.join(missing)}, which {cfg.stage} needs",
                where="placement.roles",
            )
        self.plan, self.run_dir, self.roles_used = plan, Path(cfg.run_dir), needed
        self.owns_ray = owns_ray or connect(cfg.placement.ray_address)
        offload = cfg.placement.offload
        specs = [
            HostSpec(rank, plan, cfg, str(policy_path), needed, offload)
            for rank in range(len(plan.slots))
        ]
        self.group = WorkerGroup(plan, specs)
        try:
            self.group.start()
        except BaseException:
            self.close()
            raise
        self.roles = self._handles(cfg, needed, policy_path, tokenizer, policy)
        self._write_workers()

    def weight_syncer(self, bucket_mb: float) -> RemoteRolloutSync | None:
        """The trainer → rollout sync for a caller that schedules syncs itself (the
        experience pipeline); None when every rollout worker samples with the actor's module
        (Flatten, Interleave). Updates stop syncing by themselves (``ActorHandle``)."""
        ranks = separate_sync_ranks(self.plan)
        if ranks is None:
            return None
        self.roles.actor.syncer = None
        return RemoteRolloutSync(ranks, self.call_hosts, bucket_mb)

    def call_hosts(self, ranks, method: str, *args) -> list:
        """``RoleHost.method(*args)`` on the workers of world ``ranks`` at once; their results
        in order. A dead worker raises ``WorkerFailure`` naming it, as for role calls."""
        args = tuple(ray.put(a) if isinstance(a, dict) else a for a in args)  # stored once
        refs = [getattr(self.group.actors[r], method).remote(*args) for r in ranks]
        return self.group.wait(refs, [self._call_info(r, method) for r in ranks])

    def _call_info(self, rank: int, method: str) -> CallInfo:
        """Who a worker is in a weight sync: a rollout copy, else an actor rank."""
        rollout, actor = role_ranks(self.plan, Role.ROLLOUT), role_ranks(self.plan, Role.ACTOR)
        role, ranks = (Role.ACTOR, actor) if rank in actor else (Role.ROLLOUT, rollout)
        label = self.group.specs[rank].label
        return CallInfo(rank, label, role.value, ranks.index(rank), method)

    def experience_shares_rollout_workers(self) -> bool:
        """Whether a role the experience calls after sampling (reward, reference, critic)
        has a worker on a rollout worker: a call to it waits behind a sample launched ahead
        on that worker (a Ray actor runs one call at a time), so the pipeline launches the
        next sample only after the experience (``ExperiencePipeline.launch_first``)."""
        rollout = set(role_ranks(self.plan, Role.ROLLOUT))
        others = [r for r in (Role.REWARD, Role.REFERENCE, Role.CRITIC) if r in self.roles_used]
        return any(rollout & set(role_ranks(self.plan, r)) for r in others)

    def _handles(self, cfg: RunConfig, needed, policy_path, tokenizer, policy) -> Roles:
        pad = tokenizer.pad_token_id
        client = {
            role: RoleClient(self.group, role, role_ranks(self.plan, role), pad) for role in needed
        }
        critic = None
        if Role.CRITIC in needed:
            mirror = with_lora(
                load_value_model(critic_path(cfg, policy_path), options=LoadOptions.of(cfg.model)),
                cfg.model.lora,
                "critic",
            )
            critic = CriticHandle(client[Role.CRITIC], mirror)
        reference = ReferenceHandle(client[Role.REFERENCE]) if Role.REFERENCE in needed else None
        ranks = separate_sync_ranks(self.plan)
        syncer = None
        if ranks is not None:  # on-policy by default; the pipeline takes it (weight_syncer)
            syncer = RemoteRolloutSync(ranks, self.call_hosts, cfg.staleness.sync_bucket_mb)
        return Roles(
            rollout=RolloutHandle(client[Role.ROLLOUT], sampling_params(cfg), cfg.seed),
            actor=ActorHandle(client[Role.ACTOR], policy, syncer),
            reward=RewardHandle(client[Role.REWARD]),
            reference=reference,
            critic=critic,
        )

    def _trained(self) -> list[TrainedHandle]:
        return [h for h in (self.roles.actor, self.roles.critic) if h is not None]

    def pull_weights(self) -> None:
        """Refresh the controller's copies of the trained models from the workers."""
        for handle in self._trained():
            handle.pull_weights()

    def push_weights(self) -> None:
        """Load the controller's copies (e.g. just restored) into the workers."""
        for handle in self._trained():
            handle.push_weights()

    def policy_sampler(self):
        """The rollout handle's ``generate`` when every rollout worker samples with the
        actor's own module (Flatten, Interleave): evaluation then runs on the workers' devices,
        with the current weights. Else None: a rollout copy may lag (Separate), and
        evaluation uses the controller's mirror, refreshed by ``pull_weights``."""
        return self.roles.rollout.generate if rollout_shares_actor(self.plan) else None

    def pop_spans(self) -> list[Span]:
        spans, self.group.spans = self.group.spans, []
        return spans

    def close(self) -> None:
        group = getattr(self, "group", None)
        if group is not None:
            group.close()
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()
        self.owns_ray = False

    def _write_workers(self) -> None:
        rows = [
            {
                "rank": spec.rank,
                "worker": spec.label,
                "slot": spec.slot.label,
                "roles": info["roles"],
                "pid": info["pid"],
            }
            for spec, info in zip(self.group.specs, self.group.info, strict=True)
        ]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / f".{WORKERS_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        tmp.replace(self.run_dir / WORKERS_FILE)
