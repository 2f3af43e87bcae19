"""The Ray runtime: a Plan carried out by one worker process per device slot.

``RayRuntime`` starts the workers (``group.py``), builds each slot's roles there
(``host.py``), and gives the controller ``Roles`` whose members are handles with the local
roles' methods (``handles.py``): the algorithms run unchanged. It also keeps

- the controller's *mirrors* of the trained models (the stage's policy, a critic copy), which
  evaluation and checkpoints read: ``pull_weights`` refreshes them from rank 0 when an update
  happened since, ``push_weights`` loads them into the workers after a restore;
- the workers' timeline spans, handed to the controller's timer by ``pop_spans``;
- the trainer → rollout weight sync (``rollout_sync``) wherever the rollout holds a copy of
  its own (Separate; a rollout that may lag; a frozen proposal): a broadcast from the actor's
  rank 0 to the copies over a dedicated torch.distributed group, driven by the experience
  pipeline (``placerl.runtime.pipeline``), the one place that decides when;
- ``workers.json`` in the run directory: rank, slot, roles and pid of every worker.
"""

from __future__ import annotations

from pathlib import Path

import ray

from placerl.algos.online import Needs, Roles
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.placement.plan.plan import Plan
from placerl.roles.build import critic_model, sampling_params
from placerl.runtime import RolloutSetup
from placerl.runtime.launch import RemoteLauncher
from placerl.runtime.ray.group import WORKERS_FILE, CallInfo, WorkerGroup, connect, disconnect
from placerl.runtime.ray.handles import (
    ActorHandle,
    CriticHandle,
    ReferenceHandle,
    RewardHandle,
    RoleClient,
    RolloutHandle,
    TrainedHandle,
)
from placerl.runtime.ray.host import HostSpec
from placerl.runtime.sync.workers import RemoteRolloutSync, role_ranks, sync_ranks
from placerl.timing import Span
from placerl.types import Role


def roles_of(needs: Needs) -> tuple[Role, ...]:
    roles = {Role.ACTOR, Role.ROLLOUT, Role.REWARD}
    roles |= {Role.CRITIC} if needs.critic else set()
    roles |= {Role.REFERENCE} if needs.reference else set()
    return tuple(r for r in Role if r in roles)


def start_ray_runtime(cfg: RunConfig, policy_path: Path, tokenizer, policy, needs: Needs):
    """Join or start Ray first (planning may ask it for the cluster), then plan and start."""
    from placerl.placement.from_config import plan_from_config

    owns_ray = connect(cfg.placement.ray_address)
    try:
        plan = plan_from_config(cfg)
        return RayRuntime(cfg, plan, policy_path, tokenizer, policy, needs, owns_ray)
    except BaseException:
        if owns_ray:
            disconnect()
        raise


class RayRuntime:
    """Workers for every slot of ``plan``; ``roles`` are handles to them."""

    launcher = RemoteLauncher()

    def __init__(
        self,
        cfg: RunConfig,
        plan: Plan,
        policy_path: Path,
        tokenizer,
        policy,
        needs: Needs,
        owns_ray: bool = False,
    ):
        needed = roles_of(needs)
        missing = [r.value for r in needed if r not in plan.roles]
        if missing:
            raise UserError(
                f"the {plan.strategy} plan places no {', '.join(missing)}, which {cfg.stage} needs",
                where="placement.roles",
            )
        self.plan, self.run_dir, self.roles_used = plan, Path(cfg.run_dir), needed
        self.group: WorkerGroup | None = None
        self.owns_ray = owns_ray or connect(cfg.placement.ray_address)
        self.setup = RolloutSetup.of(cfg, plan, needs)
        self.sync_ranks = sync_ranks(plan, self.setup.lagging)
        specs = [
            HostSpec(rank, plan, cfg, str(policy_path), needed, self.sync_ranks, self.setup.engine)
            for rank in range(len(plan.slots))
        ]
        self.group = WorkerGroup(plan, specs)
        try:
            self.group.start()
        except BaseException:
            self.close()
            raise
        self.roles = self._handles(cfg, needed, policy_path, tokenizer.pad_token_id, policy)
        self.experience_shares_rollout_workers = self._experience_on_rollout_workers()
        self._sync = None
        if self.sync_ranks is not None:
            bucket_mb = cfg.staleness.sync_bucket_mb
            self._sync = RemoteRolloutSync(self.sync_ranks, self.call_hosts, bucket_mb)
        self.group.write_workers(self.run_dir / WORKERS_FILE)

    def rollout_sync(self) -> RemoteRolloutSync | None:
        """The trainer → rollout sync; None when every rollout worker samples with the
        actor's module (Flatten, Interleave, neither lagging nor frozen)."""
        return self._sync

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

    def _experience_on_rollout_workers(self) -> bool:
        """Whether a role the experience calls after sampling (reward, reference, critic)
        has a worker on a rollout worker: a call to it waits behind a sample launched ahead
        on that worker (a Ray actor runs one call at a time), so the pipeline launches the
        next sample only after the experience (``ExperiencePipeline.launch_first``)."""
        rollout = set(role_ranks(self.plan, Role.ROLLOUT))
        others = [r for r in (Role.REWARD, Role.REFERENCE, Role.CRITIC) if r in self.roles_used]
        return any(rollout & set(role_ranks(self.plan, r)) for r in others)

    def _handles(self, cfg: RunConfig, needed, policy_path, pad: int, policy) -> Roles:
        client = {
            role: RoleClient(self.group, role, role_ranks(self.plan, role), pad) for role in needed
        }
        critic = None
        if Role.CRITIC in needed:
            critic = CriticHandle(client[Role.CRITIC], critic_model(cfg, policy_path))
        reference = ReferenceHandle(client[Role.REFERENCE]) if Role.REFERENCE in needed else None
        return Roles(
            rollout=RolloutHandle(
                client[Role.ROLLOUT],
                sampling_params(cfg),
                cfg.seed,
                cfg.env.limits() if cfg.env.enabled else None,
            ),
            actor=ActorHandle(client[Role.ACTOR], policy),
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
        actor's own module: evaluation then runs on the workers' devices, with the current
        weights. Else None: a rollout copy may lag, and evaluation uses the controller's
        mirror, refreshed by ``pull_weights``."""
        return self.roles.rollout.generate if self.sync_ranks is None else None

    def pop_spans(self) -> list[Span]:
        spans, self.group.spans = self.group.spans, []
        return spans

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
        if self.owns_ray and ray.is_initialized():
            disconnect()
        self.owns_ray = False
