"""The offline stages (sft, rm, dpo) data-parallel on Ray workers: one trainer rank per slot.

``placement.strategy: flatten`` puts one ``OfflineHost`` on every slot (``group.py`` starts them
in placement groups, one torch.distributed world, gloo on CPU and NCCL on GPU). Each host
loads the model seeded as the controller is (``cfg.seed``: a freshly initialized head or LoRA
adapter is the same on every rank, so FSDP shards one model), and builds the same
``OfflineTrainer`` as one process, with ``RankCollectives`` (replicas, or FSDP2 with
``placement.sharding: full | hybrid``).

The controller (``RayOffline``) deals each step's batch (``stages/offline.py``) and sends every
rank its ``Share``; the ranks' stats come back as sums. It keeps a *mirror* of the trained model
for checkpoints and export: ``pull_weights`` refreshes it from the workers when an update
happened since, ``push_weights`` loads it into them after a restore. A worker that dies is
named by ``WorkerGroup.wait`` (``WorkerFailure``: the CLI exits 3 with the resume command),
without waiting for the survivors, which may be blocked in a collective with it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import ray
import torch

from placerl.config.schema import RunConfig
from placerl.models.lora import load_trained_state, trained_state
from placerl.placement.plan.plan import Plan, Sharding
from placerl.runtime.ray.group import WORKERS_FILE, CallInfo, WorkerGroup, connect, disconnect
from placerl.runtime.ray.host import PG_TIMEOUT, HostSpec, RoleHost, _quiet_libraries
from placerl.timing import Span
from placerl.types import Role


class OfflineHost:
    """One rank of an offline trainer, in its own process (a Ray actor)."""

    def __init__(self, spec: HostSpec):
        self.spec, self.label = spec, spec.label
        if spec.slot.kind == "gpu":
            self.device = torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES per actor
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, spec.slot.threads))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _quiet_libraries()
        self.trainer = None

    address = RoleHost.address

    def setup(self, master_addr: str, master_port: int) -> dict[str, Any]:
        """Join the world, make the trainer's group (and FSDP mesh), build the trainer."""
        import torch.distributed as dist

        from placerl.models.loading import LoadOptions, load_tokenizer
        from placerl.runtime.offline import build_trainer, offline_model
        from placerl.runtime.ray.data_parallel import fsdp_mesh
        from placerl.runtime.ray.offline_ranks import RankCollectives
        from placerl.trainer import seed_everything

        spec, plan = self.spec, self.spec.plan
        size = len(plan.slots)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=spec.rank,
            world_size=size,
            timeout=PG_TIMEOUT,
        )
        ranks = list(range(size))
        group = dist.new_group(ranks)
        placement = plan.roles[Role.ACTOR]
        mesh = None
        if size > 1 and placement.sharding != Sharding.NONE:
            mesh = fsdp_mesh(self.device.type, ranks, placement.sharding, placement.shard_size)
        parallel = RankCollectives(spec.rank, size, group, mesh, self.device)
        cfg, path = spec.cfg, Path(spec.policy_path)
        tokenizer = load_tokenizer(cfg.model.tokenizer or path, LoadOptions.of(cfg.model))
        seed_everything(cfg.seed)
        model = offline_model(cfg, path)
        self.trainer = build_trainer(cfg, model, tokenizer, path, self.device, parallel)
        return {"pid": os.getpid(), "label": self.label, "roles": ["actor"]}

    def run(self, method: str, *args) -> tuple[Any, Span]:
        """``trainer.method(*args)`` with its span on this worker's timeline."""
        start = time.time()
        result = getattr(self.trainer, method)(*[_resolve(a) for a in args])
        return result, Span(self.label, f"{self.spec.cfg.stage}.{method}", start, time.time())

    def trained_weights(self) -> dict[str, torch.Tensor]:
        """The full weights (collective under FSDP); of a LoRA model its trained part."""
        return trained_state(self.trainer.model, self.trainer.weights())

    def pid(self) -> int:
        return os.getpid()

    def shutdown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _resolve(value: Any) -> Any:
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class OfflineWorkerGroup(WorkerGroup):
    host = OfflineHost


def offline_roles(cfg: RunConfig) -> tuple[Role, ...]:
    return (Role.ACTOR, Role.REFERENCE) if cfg.stage == "dpo" else (Role.ACTOR,)


def start_offline_workers(cfg: RunConfig, policy_path: Path, tokenizer, model) -> RayOffline:
    """Join or start Ray, plan, start one trainer rank per slot."""
    from placerl.placement.from_config import plan_from_config

    owns_ray = connect(cfg.placement.ray_address)
    try:
        plan = plan_from_config(cfg)
        return RayOffline(cfg, plan, policy_path, model, owns_ray)
    except BaseException:
        if owns_ray:
            disconnect()
        raise


class RayOffline:
    """The controller's side of the ranks (``stages/offline.py``'s runtime)."""

    def __init__(self, cfg: RunConfig, plan: Plan, policy_path: Path, model, owns_ray: bool):
        self.cfg, self.plan, self.model, self.owns_ray = cfg, plan, model, owns_ray
        self.world = len(plan.slots)
        self.lockstep = self.world > 1 and plan.roles[Role.ACTOR].sharding != Sharding.NONE
        roles = offline_roles(cfg)
        specs = [HostSpec(r, plan, cfg, str(policy_path), roles) for r in range(self.world)]
        self.group: OfflineWorkerGroup | None = OfflineWorkerGroup(plan, specs)
        self.updates = self.pulled = 0
        try:
            self.group.start()
        except BaseException:
            self.close()
            raise
        self.group.write_workers(Path(cfg.run_dir) / WORKERS_FILE)

    def _call(self, method: str, per_rank: list[tuple] | None = None, *same) -> list:
        """``trainer.method`` on every rank (its own args, or the same ones); results in
        rank order. A dead worker raises ``WorkerFailure`` naming it."""
        same = tuple(ray.put(a) for a in same)
        args = per_rank or [same] * self.world
        actors = self.group.actors
        refs = [actors[r].run.remote(method, *args[r]) for r in range(self.world)]
        calls = [
            CallInfo(r, self.group.specs[r].label, "actor", r, method) for r in range(self.world)
        ]
        results = self.group.wait(refs, calls)
        self.group.spans += [span for _, span in results]
        return [value for value, _ in results]

    def reference(self, shares: list) -> list[torch.Tensor | None]:
        return self._call("reference_sums", [(s,) for s in shares])

    def train(self, shares: list) -> list[dict[str, float]]:
        self.updates += 1
        return self._call("train", [(s,) for s in shares])

    def evaluate(self, evaluator) -> Any:
        return self._call("evaluate", None, evaluator)[0]

    def free_reference(self) -> None:
        self._call("free_reference")

    def _every_rank(self, method: str, *args) -> list:
        refs = [getattr(a, method).remote(*args) for a in self.group.actors]
        calls = [
            CallInfo(r, self.group.specs[r].label, "actor", r, method) for r in range(self.world)
        ]
        return self.group.wait(refs, calls)

    def pull_weights(self) -> None:
        """Rank 0's full weights into the controller's mirror, if an update happened since."""
        if self.pulled == self.updates:
            return
        load_trained_state(self.model, self._every_rank("trained_weights")[0])
        self.pulled = self.updates

    def push_weights(self) -> None:
        self._call("load_weights", None, trained_state(self.model))
        self.pulled = self.updates

    def state_dict(self) -> dict:
        return self._call("state_dict")[0]

    def load_state_dict(self, state: dict) -> None:
        self._call("load_state_dict", None, state)

    def pop_spans(self) -> list[Span]:
        spans, self.group.spans = self.group.spans, []
        return spans

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None
        if self.owns_ray and ray.is_initialized():
            disconnect()
        self.owns_ray = False
