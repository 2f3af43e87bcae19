"""The body of one worker process: every role the Plan puts on one device slot.

One process per slot (``group.py`` makes it a Ray actor). Roles on the same slot share the
process and take turns on its device; the rollout samples from the actor's own module when
both live on the same slots (Flatten, Interleave) and it may not lag, so there is nothing to
sync; otherwise it holds a copy of its own (``runtime/sync/workers.py``). All the processes of
a Plan form one ``torch.distributed`` world (gloo on CPU, NCCL on GPU); each trained or
sharded role with several workers gets its own sub-group (and an FSDP mesh when sharded),
created in the same order in every process, as torch requires.

``call(role, method, args, kwargs)`` runs any role method, which keeps this layer general:
the handles decide how data is split and gathered, a sync adds its own methods. Every call
returns wall-clock spans (worker, ``role.method``, start, end) for the run's timeline.
Offload (``Plan.offload``, GPU only) is ``offload.py``'s.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict

from placerl.config.schema import RunConfig
from placerl.models.lora import load_trained_state, parameter_bytes, trained_state
from placerl.placement.plan.plan import DeviceSlot, Plan, Sharding
from placerl.roles.actor import ActorWorker
from placerl.roles.critic import CriticWorker
from placerl.runtime.ray.data_parallel import (
    DataParallel,
    ShardedActorMixin,
    ShardedCriticMixin,
    fsdp_mesh,
    shard_model,
    unsharded,
)
from placerl.runtime.ray.offload import bring_in, held_model
from placerl.runtime.sync.consumers import engine_weights
from placerl.runtime.sync.transport import SyncStats
from placerl.runtime.sync.workers import SyncRanks, role_ranks, sync_on_host
from placerl.timing import Span
from placerl.types import Role

PG_TIMEOUT = timedelta(minutes=10)  # a hung collective; a dead peer is caught by the controller


class DataParallelActor(ShardedActorMixin, ActorWorker):
    pass


class DataParallelCritic(ShardedCriticMixin, CriticWorker):
    pass


@dataclass(frozen=True)
class HostSpec:
    """What one worker process needs to build its roles (all of it picklable)."""

    rank: int  # rank in the world of every slot of the Plan
    plan: Plan
    cfg: RunConfig
    policy_path: str
    roles: tuple[Role, ...]  # the roles the run uses (a Plan may place more)
    sync: SyncRanks | None = None  # who takes part in trainer → rollout syncs
    engine: bool = False  # the rollout samples on an inference engine

    @property
    def slot(self) -> DeviceSlot:
        return self.plan.slots[self.rank]

    @property
    def label(self) -> str:
        group = next(g.name for g in self.plan.groups if self.slot in g.slots)
        return f"{group}/w{self.rank}"

    @property
    def rollout_copy(self) -> bool:
        """This worker's rollout holds a copy of its own (a sync receiver)."""
        return self.sync is not None and self.rank in self.sync.receivers


def rollout_shares_actor(plan: Plan, role: Role = Role.ROLLOUT) -> bool:
    """Whether every ``role`` worker can run on an actor module in its own process: its slot
    hosts an actor worker, and the actor is replicated, or sharded over exactly the role's
    workers (a sharded forward is a collective over them)."""
    if role not in plan.roles or Role.ACTOR not in plan.roles:
        return False
    rollout, actor = role_ranks(plan, role), role_ranks(plan, Role.ACTOR)
    if plan.roles[Role.ACTOR].sharding == Sharding.NONE or len(actor) == 1:
        return set(rollout) <= set(actor)
    return rollout == actor


class RoleHost:
    """Hosts the roles of one slot; Ray calls its methods one at a time."""

    def __init__(self, spec: HostSpec):
        self.spec = spec
        self.label = spec.label
        slot = spec.slot
        if slot.kind == "gpu":
            self.device = torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES per actor
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, slot.threads))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _quiet_libraries()
        self.roles: dict[Role, Any] = {}
        self.dp: dict[Role, DataParallel] = {}
        self.spans: list[Span] = []  # host-method spans (a sync), returned by the next call
        self._actor_updates = 0  # updates this slot's actor made (a colocated engine follows)
        self._engine_version = 0  # the actor updates this slot's colocated engine holds
        # the engine samples the actor's weights, loaded in-process after each update
        self.engine_follows_actor = spec.engine and not spec.rollout_copy

    # ------------------------------------------------------------------ setup
    def setup(self, master_addr: str, master_port: int) -> dict[str, Any]:
        """Join the world, make every role's sub-group, build this slot's roles."""
        import torch.distributed as dist

        from placerl.models.loading import LoadOptions, load_tokenizer

        spec, plan = self.spec, self.spec.plan
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=spec.rank,
            world_size=len(plan.slots),
            timeout=PG_TIMEOUT,
        )
        for role in spec.roles:  # same order everywhere: new_group is collective
            self._make_group(role)
        # the group over which the actor's rank 0 broadcasts to the rollout copies
        ranks = spec.sync.group_ranks if spec.sync else None
        self.sync_group = dist.new_group(list(ranks)) if ranks else None
        path = Path(spec.policy_path)
        self.tokenizer = load_tokenizer(
            spec.cfg.model.tokenizer or path, LoadOptions.of(spec.cfg.model)
        )
        self._build_roles(path)
        return {"pid": os.getpid(), "label": self.label, "roles": [r.value for r in self.roles]}

    def _make_group(self, role: Role) -> None:
        """The role's place in its data-parallel group; a torch.distributed sub-group (and
        an FSDP mesh) only for roles with collectives: trained or sharded ones."""
        import torch.distributed as dist

        plan, placement = self.spec.plan, self.spec.plan.roles[role]
        ranks = role_ranks(plan, role)
        sharded = placement.sharding != Sharding.NONE and role != Role.ROLLOUT
        group = mesh = None
        if len(ranks) > 1 and (sharded or role in (Role.ACTOR, Role.CRITIC)):
            group = dist.new_group(ranks)
            if sharded:
                mesh = fsdp_mesh(self.device.type, ranks, placement.sharding, placement.shard_size)
        if self.spec.rank in ranks:
            rank = ranks.index(self.spec.rank)
            self.dp[role] = DataParallel(rank, len(ranks), group, mesh, self.device)

    def _build_roles(self, path: Path) -> None:
        from placerl.models.loading import LoadOptions, load_policy
        from placerl.models.lora import with_lora
        from placerl.roles.build import build_reward, make_actor, make_critic, make_reference

        cfg, mine = self.spec.cfg, [r for r in self.spec.roles if r in self.dp]
        policy = None
        if Role.ACTOR in mine:
            options = LoadOptions.of(cfg.model)
            policy = with_lora(load_policy(path, options), cfg.model.lora).to(self.device)
            self.roles[Role.ACTOR] = self._trained(Role.ACTOR, make_actor, cfg, policy)
        if Role.ROLLOUT in mine:
            self.roles[Role.ROLLOUT] = self._rollout(policy, path)
        if Role.REFERENCE in mine:
            # with LoRA, a reference colocated with the actor is its base (adapter disabled);
            # one on other workers (Interleave, or a sharded actor) loads a copy of the base
            shares = policy is not None and rollout_shares_actor(self.spec.plan, Role.REFERENCE)
            reference = make_reference(cfg, path, policy if shares else None)
            if reference.shares_actor:
                reference.share_prefix = not self.dp[Role.ACTOR].sharded
            else:
                reference.share_prefix = not self.dp[Role.REFERENCE].sharded
                self._frozen(Role.REFERENCE, reference.model)
            self.roles[Role.REFERENCE] = reference
        if Role.CRITIC in mine:
            self.roles[Role.CRITIC] = self._trained(Role.CRITIC, make_critic, cfg, path)
        if Role.REWARD in mine:
            reward = build_reward(cfg, self.tokenizer)
            if reward.model is not None:
                self._frozen(Role.REWARD, reward.model)
            self.roles[Role.REWARD] = reward

    def _trained(self, role: Role, make, cfg: RunConfig, model_or_path):
        """A trained role; data-parallel (replicas or FSDP) when it has several workers."""
        dp = self.dp[role]
        cls = {
            Role.ACTOR: (ActorWorker, DataParallelActor),
            Role.CRITIC: (CriticWorker, DataParallelCritic),
        }[role][dp.size > 1]
        extra = {"dp": dp} if dp.size > 1 else {}
        if role == Role.ACTOR:  # FSDP ranks must all run the same forwards: no prefix sharing
            return make(cfg, model_or_path, cls=cls, share_prefix=not dp.sharded, **extra)
        worker = make(cfg, model_or_path, cls=cls, **extra)
        if dp.size == 1:
            worker.model.to(self.device)
        return worker

    def _frozen(self, role: Role, model) -> None:
        model.to(self.device)
        dp = self.dp[role]
        if dp.sharded:
            shard_model(model, dp.mesh, self.spec.cfg.model.precision)

    def _rollout(self, policy, path: Path):
        """On the actor's module, or a copy that ``sync_rollout_weights`` refreshes when the
        pipeline says so; an engine holds its own weights either way (fed from that copy,
        or from the colocated actor after each update)."""
        from placerl.roles.build import make_engine_rollout, make_rollout, rollout_copy

        cfg = self.spec.cfg
        copy = rollout_copy(cfg, path).to(self.device) if self.spec.rollout_copy else None
        if self.spec.engine:
            rollout = make_engine_rollout(cfg, path, self.tokenizer)
            rollout.model = copy  # the HF copy that receives syncs (None: follows the actor)
            return rollout
        return make_rollout(cfg, copy if copy is not None else policy, self.tokenizer)

    # ------------------------------------------------------------------ calls
    def call(self, role: str, method: str, args=(), kwargs=None) -> tuple[Any, list[Span]]:
        """Run ``roles[role].method(*args, **kwargs)``; returns the result (on CPU) and spans."""
        key = Role(role)
        spans, self.spans = [*self.spans, *self._prepare(key)], []
        target = self.roles[key]
        start = time.time()
        args = [_to(_resolve(a), self.device) for a in args]
        kwargs = {k: _to(_resolve(v), self.device) for k, v in (kwargs or {}).items()}
        follows = key == Role.ROLLOUT and self.engine_follows_actor
        if follows:
            self._refresh_colocated_engine(target)
        with self._generation_context(key):
            result = getattr(target, method)(*args, **kwargs)  # the method the handle named
        if key == Role.ACTOR and method in ("update", "fit_grouped"):
            self._actor_updates += 1
        if follows:
            target.engine.sleep()  # the trainer's turn on this device (GPU; no-op on CPU)
        result = _to(result, torch.device("cpu"))
        spans.append(Span(self.label, f"{role}.{method}", start, time.time()))
        return result, spans

    def _prepare(self, role: Role) -> list[Span]:
        if not self.spec.plan.offload or self.device.type != "cuda":
            return []
        start = time.time()
        sharded = {r: r in self.dp and self.dp[r].sharded for r in self.roles}
        bring_in(self.roles, sharded, role, self.device)
        return [Span(self.label, "offload", start, time.time())]

    def _generation_context(self, role: Role):
        """Generation from an FSDP-sharded actor's module runs with its weights gathered."""
        actor, dp = self.roles.get(Role.ACTOR), self.dp.get(Role.ACTOR)
        if role != Role.ROLLOUT or actor is None or dp is None or not dp.sharded:
            return contextlib.nullcontext()
        if self.roles[Role.ROLLOUT].model is not actor.model:
            return contextlib.nullcontext()
        return unsharded(actor.model)

    def _refresh_colocated_engine(self, rollout) -> None:
        """The actor's current weights into this slot's engine, once per update (a sharded
        actor's ``weights()`` gathers them)."""
        if self._engine_version == self._actor_updates:
            return
        start = time.time()
        rollout.load_named_weights(engine_weights(self._source_weights(gathered=True)))
        self._engine_version = self._actor_updates
        self.spans.append(Span(self.label, "rollout.engine_load", start, time.time()))

    def _source_weights(self, gathered: bool = False):
        """The actor's weights as a sync sends them: its module, or (FSDP) the full state
        dict gathered from every actor rank — a collective — of a LoRA model its adapters."""
        from placerl.models.lora import adapter_tensors, is_lora, sync_view

        actor = self.roles[Role.ACTOR]
        if not self.dp[Role.ACTOR].sharded:
            return actor.model if gathered else sync_view(actor.model)
        weights = actor.weights()
        return adapter_tensors(weights) if is_lora(actor.model) and not gathered else weights

    def sync_rollout_weights(self, bucket_mb: float) -> SyncStats | None:
        """This worker's part of a trainer → rollout sync: the actor's rank 0 broadcasts over
        ``sync_group``, rollout copies receive, FSDP actor ranks help gather.
        ``RemoteRolloutSync`` calls every participant at once; the span goes to the timeline
        with this worker's next ``call``."""
        start = time.time()
        ranks = self.spec.sync
        source = self._source_weights() if self.spec.rank in ranks.gatherers else None
        rollout = self.roles.get(Role.ROLLOUT)
        copy = rollout.model if self.spec.rollout_copy else None
        stats = sync_on_host(
            self.spec.rank,
            ranks,
            self.sync_group,
            source=source,
            rollout_model=copy,
            bucket_mb=bucket_mb,
            device=self.device,
        )
        if copy is not None and self.spec.engine:
            rollout.load_named_weights(engine_weights(copy))  # HF copy → engine
        self.spans.append(Span(self.label, "rollout.sync", start, time.time()))
        return stats

    def weights(self, role: str) -> dict[str, torch.Tensor]:
        """The role's full weights on CPU (collective for a data-parallel role); of a LoRA
        model, the adapters and trained heads only (``models.lora.trained_state``)."""
        key = Role(role)
        target = self.roles[key]
        if self._data_parallel(key):
            return trained_state(target.model, target.weights())
        return trained_state(target.model)

    def load_weights(self, role: str, weights: dict[str, torch.Tensor]) -> None:
        key = Role(role)
        target = self.roles[key]
        if self._data_parallel(key):
            target.load_weights(weights)
            return
        load_trained_state(target.model, weights)
        if key == Role.ROLLOUT and self.spec.engine:  # an engine's receiver copy
            target.load_named_weights(engine_weights(target.model))

    def _data_parallel(self, role: Role) -> bool:
        return role in (Role.ACTOR, Role.CRITIC) and self.dp[role].size > 1

    def parameter_bytes(self) -> int:
        """Bytes of the distinct weights this worker holds over all its roles (a LoRA
        reference that is the actor's base adds nothing): memory checks and tests."""
        held = [held_model(target, sharded=False) for target in self.roles.values()]
        return parameter_bytes(*[m for m in held if m is not None])

    def pid(self) -> int:
        return os.getpid()

    def address(self) -> tuple[str, int]:
        """This node's address and a TCP port free on it (the torch.distributed master)."""
        import socket

        import ray

        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def shutdown(self) -> None:
        """Close this slot's inference engine and leave the process group (before a kill)."""
        import torch.distributed as dist

        from placerl.roles.rollout import EngineRolloutWorker

        rollout = self.roles.get(Role.ROLLOUT)
        if isinstance(rollout, EngineRolloutWorker):
            rollout.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def _resolve(value: Any) -> Any:
    """An object put in Ray's store once for every worker (e.g. the update batch)."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _to(value: Any, device: torch.device) -> Any:
    """Tensors and TensorDicts to ``device``, inside dicts, lists and tuples too."""
    if isinstance(value, (torch.Tensor, TensorDict)):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if type(value) in (list, tuple):  # not NamedTuples
        return type(value)(_to(v, device) for v in value)
    return value


def _quiet_libraries() -> None:
    """No loading progress bars or notices from every worker (the controller has its own)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
