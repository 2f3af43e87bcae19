"""The body of one worker process: every role the Plan puts on one device slot.

One process per slot (``group.py`` makes it a Ray actor). Roles on the same slot share the
process and take turns on its device; the rollout samples from the actor's own module when
both live on the same slots (Flatten, Interleave), so there is nothing to sync. All the
processes of a Plan form one ``torch.distributed`` world (gloo on CPU, NCCL on GPU); each
trained or sharded role with several workers gets its own sub-group (and an FSDP mesh when
sharded), created in the same order in every process, as torch requires.

``call(role, method, args, kwargs)`` runs any role method, which keeps this layer general:
the handles decide how data is split and gathered, Separate adds its own methods. Every call
returns wall-clock spans (worker, ``role.method``, start, end) for the run's timeline.

Offload (``placement.offload``, GPU only): before a role runs, the other roles' models (and
optimizer states) on this slot go to CPU memory and the role's own come back. On CPU there is
nowhere to offload to, so it is a no-op; FSDP-sharded models are never moved.
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
from placerl.models.lora import FrozenBase, load_trained_state, trained_state, with_lora
from placerl.placement.plan.plan import DeviceSlot, Plan, Sharding
from placerl.roles.actor import ActorWorker
from placerl.roles.critic import CriticWorker
from placerl.runtime.engine import engine_weights, refresh_from_actor
from placerl.runtime.ray.data_parallel import (
    DataParallel,
    ShardedActorMixin,
    ShardedCriticMixin,
    shard_model,
    unsharded,
)
from placerl.runtime.weight_sync import (
    SyncStats,
    separate_sync_ranks,
    sync_on_host,
)
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
    offload: bool = False

    @property
    def slot(self) -> DeviceSlot:
        return self.plan.slots[self.rank]

    @property
    def label(self) -> str:
        group = next(g.name for g in self.plan.groups if self.slot in g.slots)
        return f"{group}/w{self.rank}"


def role_ranks(plan: Plan, role: Role) -> list[int]:
    """World ranks of the role's data-parallel workers, in role-rank order."""
    return [plan.slots.index(s) for s in plan.worker_slots(role)]


def rollout_shares_actor(plan: Plan, role: Role = Role.ROLLOUT) -> bool:
    """Whether every rollout worker (or ``role`` worker) can run on an actor module in its own
    process: its slot hosts an actor worker, and the actor is replicated, or sharded over
    exactly the role's workers (generation then gathers the weights, a collective over them;
    a sharded forward is one over them too)."""
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
        # Separate: the group over which the actor's rank 0 broadcasts to the rollout copies
        self.sync_ranks = separate_sync_ranks(plan)
        ranks = self.sync_ranks.group_ranks if self.sync_ranks else None
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
                mesh = _mesh(self.device.type, ranks, placement.sharding, placement.shard_size)
        if self.spec.rank in ranks:
            rank = ranks.index(self.spec.rank)
            self.dp[role] = DataParallel(rank, len(ranks), group, mesh, self.device)

    def _build_roles(self, path: Path) -> None:
        from placerl.models.loading import LoadOptions, load_policy
        from placerl.runtime.local import build_reward, make_actor, make_critic, make_reference

        cfg, mine = self.spec.cfg, [r for r in self.spec.roles if r in self.dp]
        policy = None
        if Role.ACTOR in mine:
            options = LoadOptions.of(cfg.model)
            policy = with_lora(load_policy(path, options), cfg.model.lora).to(self.device)
            self.roles[Role.ACTOR] = self._trained(Role.ACTOR, policy, make_actor, cfg)
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
            self.roles[Role.CRITIC] = self._trained(
                Role.CRITIC, None, make_critic, cfg, path, self.tokenizer
            )
        if Role.REWARD in mine:
            reward = build_reward(cfg, self.tokenizer)
            if getattr(reward, "model", None) is not None:
                self._frozen(Role.REWARD, reward.model)
            self.roles[Role.REWARD] = reward

    def _trained(self, role: Role, model, make, cfg: RunConfig, *args):
        """A trained role; data-parallel (replicas or FSDP) when it has several workers."""
        dp = self.dp[role]
        cls = {
            Role.ACTOR: (ActorWorker, DataParallelActor),
            Role.CRITIC: (CriticWorker, DataParallelCritic),
        }[role][dp.size > 1]
        extra = {"dp": dp} if dp.size > 1 else {}
        if role == Role.ACTOR:  # FSDP ranks must all run the same forwards: no prefix sharing
            return make(cfg, model, cls=cls, share_prefix=not dp.sharded, **extra)
        worker = make(cfg, *args, cls=cls, **extra)
        if dp.size == 1:
            worker.model.to(self.device)
        return worker

    def _frozen(self, role: Role, model) -> None:
        model.to(self.device)
        dp = self.dp[role]
        if dp.sharded:
            shard_model(model, dp.mesh, self.spec.cfg.model.precision)

    def _rollout(self, policy, path: Path):
        """The rollout on the actor's module where ``rollout_shares_actor``, else a copy that
        ``sync_rollout_weights`` refreshes (when the experience pipeline says so), held in the
        training precision (bf16 with bf16 training; the broadcast casts on receipt)."""
        from placerl.models.loading import LoadOptions, load_policy
        from placerl.runtime.local import make_rollout

        shared = policy is not None and rollout_shares_actor(self.spec.plan)
        if self.spec.cfg.rollout.engine == "vllm":
            return self._engine_rollout(policy if shared else None, path)
        if shared:
            model = policy
        else:  # never trained, only synced into (casting): held in the training precision;
            # with LoRA the same LoRA model, so adapters sync alone
            options = LoadOptions.of(self.spec.cfg.model, frozen=True)
            lora = self.spec.cfg.model.lora
            model = with_lora(load_policy(path, options), lora).to(self.device)
        return make_rollout(self.spec.cfg, model, self.tokenizer)

    def _engine_rollout(self, policy, path: Path):
        """An engine with its own weights (runtime/engine.py: ``engine_rollout_for_slot``)."""
        from placerl.runtime.engine import engine_rollout_for_slot

        return engine_rollout_for_slot(
            self.spec.cfg, path, self.tokenizer, self.device, colocated=policy is not None
        )

    # ------------------------------------------------------------------ calls
    def call(self, role: str, method: str, args=(), kwargs=None) -> tuple[Any, list[Span]]:
        """Run ``roles[role].method(*args, **kwargs)``; returns the result (on CPU) and spans."""
        key = Role(role)
        spans, self.spans = [*self.spans, *self._prepare(key)], []
        target = self.roles[key]
        start = time.time()
        args = [_to(_resolve(a), self.device) for a in args]
        kwargs = {k: _to(_resolve(v), self.device) for k, v in (kwargs or {}).items()}
        if key == Role.ROLLOUT and getattr(target, "colocated", False):
            self._refresh_colocated_engine(target)
        with self._generation_context(key, method):
            result = getattr(target, method)(*args, **kwargs)
        if key == Role.ACTOR and method == "update":
            self._actor_updates += 1
        if key == Role.ROLLOUT and getattr(target, "colocated", False):
            target.engine.sleep()  # the trainer's turn on this device (GPU; no-op on CPU)
        result = _to(result, torch.device("cpu"))
        spans.append(Span(self.label, f"{role}.{method}", start, time.time()))
        return result, spans

    def _generation_context(self, role: Role, method: str):
        """Generation from an FSDP-sharded actor's module runs with its weights gathered."""
        actor, dp = self.roles.get(Role.ACTOR), self.dp.get(Role.ACTOR)
        if role != Role.ROLLOUT or actor is None or dp is None or not dp.sharded:
            return contextlib.nullcontext()
        if self.roles[Role.ROLLOUT].model is not actor.module:
            return contextlib.nullcontext()
        return unsharded(actor.module)

    def _refresh_colocated_engine(self, rollout) -> None:
        """The actor's current weights into this slot's engine, once per update."""
        start = time.time()
        if refresh_from_actor(rollout, self.roles[Role.ACTOR], self._actor_updates):
            self.spans.append(Span(self.label, "rollout.engine_load", start, time.time()))

    def sync_rollout_weights(self, bucket_mb: float) -> SyncStats | None:
        """This worker's part of a trainer → rollout sync (Separate): the actor's rank 0
        broadcasts over ``sync_group``, rollout copies receive, FSDP actor ranks help gather.
        ``RemoteRolloutSync`` calls every participant at once; the span goes to the timeline
        with this worker's next ``call``."""
        start = time.time()
        actor, rollout = self.roles.get(Role.ACTOR), self.roles.get(Role.ROLLOUT)
        shared = actor is not None and rollout is not None and rollout.model is actor.model
        stats = sync_on_host(
            self.spec.rank,
            self.sync_ranks,
            self.sync_group,
            actor=actor,
            rollout_model=None if rollout is None or shared else rollout.model,
            bucket_mb=bucket_mb,
            device=self.device,
        )
        receiver = self.spec.rank in self.sync_ranks.receivers
        if receiver and hasattr(rollout, "load_named_weights") and rollout.model is not None:
            rollout.load_named_weights(engine_weights(rollout.model))  # HF copy → engine
        self.spans.append(Span(self.label, "rollout.sync", start, time.time()))
        return stats

    def weights(self, role: str) -> dict[str, torch.Tensor]:
        """The role's full weights on CPU (collective for a sharded role); of a LoRA model,
        the adapters and trained heads only (``models.lora.trained_state``)."""
        target = self.roles[Role(role)]
        model = getattr(target, "module", None)
        model = target.model if model is None else model
        if hasattr(target, "weights"):
            return trained_state(model, target.weights())
        return trained_state(model)

    def load_weights(self, role: str, weights: dict[str, torch.Tensor]) -> None:
        target = self.roles[Role(role)]
        if hasattr(target, "weights"):
            target.load_weights(weights)
        else:
            load_trained_state(target.model, weights)
            if hasattr(target, "load_named_weights"):  # an engine's receiver copy
                target.load_named_weights(engine_weights(target.model))

    def parameter_bytes(self) -> int:
        """Bytes of the distinct weights this worker holds over all its roles (a LoRA
        reference that is the actor's base adds nothing): memory checks and tests."""
        from placerl.models.lora import parameter_bytes

        models = [m for role in self.roles for m in self._all_models(role)]
        return parameter_bytes(*models)

    def _all_models(self, role: Role) -> list[torch.nn.Module]:
        model = getattr(self.roles[role], "model", None)
        if isinstance(model, FrozenBase):
            model = model.lora_model
        return [model] if isinstance(model, torch.nn.Module) else []

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
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ offload
    def _prepare(self, role: Role) -> list[Span]:
        """Offload the other roles' models and bring this role's back (GPU + flag only)."""
        if not self.spec.offload or self.device.type != "cuda":
            return []
        start = time.time()
        keep = {id(m) for m in self._models(role)}
        for other in self.roles:
            for model in self._models(other):
                if id(model) not in keep:
                    _move(model, self._optimizer(other), torch.device("cpu"))
        for model in self._models(role):
            _move(model, self._optimizer(role), self.device)
        torch.cuda.empty_cache()
        return [Span(self.label, "offload", start, time.time())]

    def _models(self, role: Role) -> list[torch.nn.Module]:
        target = self.roles[role]
        model = getattr(target, "module", None)  # a data-parallel role's plain model
        if model is None:
            model = getattr(target, "model", None)  # None: a rule reward
        if isinstance(model, FrozenBase):  # a LoRA reference: it runs on the actor's model
            model = model.lora_model
        dp = self.dp.get(role)
        if model is None or (dp is not None and dp.sharded):
            return []
        return [model]

    def _optimizer(self, role: Role):
        return getattr(self.roles[role], "optimizer", None)


def _mesh(device_type: str, ranks: list[int], sharding: Sharding, shard_size: int | None):
    """FSDP's mesh: 1-D over the ranks (full), or replicate × shard groups (hybrid)."""
    from torch.distributed.device_mesh import DeviceMesh

    ids = torch.tensor(ranks)
    if sharding == Sharding.HYBRID:
        ids = ids.view(-1, shard_size or len(ranks))
        return DeviceMesh(device_type, ids, mesh_dim_names=("replicate", "shard"))
    return DeviceMesh(device_type, ids, mesh_dim_names=("shard",))


def _move(model: torch.nn.Module, optimizer, device: torch.device) -> None:
    model.to(device)
    if optimizer is not None:
        for state in optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    state[key] = value.to(device)


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
