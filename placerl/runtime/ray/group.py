"""The Ray side of a Plan: connect, reserve the slots, start one worker per slot, wait.

- ``connect``: join ``placement.ray_address``, or start a local Ray (no dashboard, quiet
  logs) unless this process already has one (tests start one per file); a local Ray's
  processes are watched by ``reaper.py`` and end with this one, even after ``kill -9``;
  ``disconnect`` shuts it down.
- ``WorkerGroup.start``: one placement group per device group of the Plan, one bundle per
  slot (``{CPU: threads}`` or ``{GPU: 1, CPU: 1}``); the resources are checked first, so a
  cluster that lacks them gives one UserError saying what was asked and what exists. Then one
  ``RoleHost`` actor per slot, all joining one torch.distributed world whose master port is
  picked free on rank 0's node.
- ``WorkerGroup.wait``: results of remote calls, in order, watching for dead workers: the first
  ``ActorDiedError`` becomes a ``WorkerFailure`` naming role, rank and process, without waiting
  for the survivors (who may be blocked in a collective with the dead one).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from placerl.errors import UserError
from placerl.placement.plan.cluster import probe
from placerl.placement.plan.plan import DeviceSlot, Plan
from placerl.runtime.faults import WorkerFailure
from placerl.runtime.ray.host import HostSpec, RoleHost
from placerl.runtime.ray.reaper import Reaper, children_of
from placerl.timing import Span

WORKERS_FILE = "workers.json"  # in the run directory: who is where (``write_workers``)
SHUTDOWN_TIMEOUT_S = 20.0  # for the workers to close their engines before they are killed
READY_TIMEOUT_S = 60.0  # placement groups that cannot be scheduled by then: resources missing
PEER_DEATH_S = 10.0  # for Ray to report a peer that died, once a call failed (``wait``)
DEATH_ERRORS = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.OutOfMemoryError,
)


_reaper: Reaper | None = None  # the watchdog of the local Ray this process started


def connect(address: str | None) -> bool:
    """Make sure this process is a Ray driver; True when we started (and so own) the Ray,
    whose processes then end with this one, however it ends (``reaper.py``)."""
    global _reaper
    if ray.is_initialized():
        return False
    if address:
        probe(address)
    before = children_of(os.getpid())
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = "placement.ray_address" if address else "placement"
        what = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        raise UserError(f"cannot start or reach {what}: {err}", where=where) from None
    if address is None:
        _reaper = Reaper.start(children_of(os.getpid()) - before)
    return address is None


def disconnect() -> None:
    """Shut down the Ray this process started, and its watchdog with whatever outlived it."""
    global _reaper
    ray.shutdown()
    reaper, _reaper = _reaper, None
    if reaper is not None:
        reaper.stop()


def bundle(slot: DeviceSlot) -> dict[str, float]:
    if slot.kind == "gpu":
        return {"GPU": 1.0, "CPU": 1.0}
    return {"CPU": float(max(1, slot.threads))}


def check_resources(plan: Plan) -> None:
    """UserError unless the cluster has the CPUs/GPUs every slot of the plan asks for."""
    asked: dict[str, float] = {}
    for slot in plan.slots:
        for key, amount in bundle(slot).items():
            asked[key] = asked.get(key, 0.0) + amount
    total = ray.cluster_resources()
    short = [k for k, v in asked.items() if total.get(k, 0.0) < v]
    if short:  # busy but sufficient resources are waited for (``READY_TIMEOUT_S``)
        raise UserError(
            f"the {plan.strategy} plan asks for {_fmt(asked)} ({len(plan.slots)} workers: "
            f"{', '.join(s.label for s in plan.slots)}); the Ray cluster has "
            f"{_fmt(total, short)} in all. Use fewer placement.num_workers or "
            "threads_per_worker, or a larger cluster",
            where="placement",
        )


def _fmt(resources: dict[str, float], keys: Sequence[str] | None = None) -> str:
    keys = keys or [k for k in ("CPU", "GPU") if k in resources]
    return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in keys) or "nothing"


@dataclass(frozen=True)
class CallInfo:
    """Who a remote call went to, for the message if its worker dies."""

    rank: int
    label: str
    role: str
    role_rank: int
    method: str


class WorkerGroup:
    """One ``RoleHost`` actor per slot of the Plan, in placement groups, one torch world
    (``host``: the actor class; the offline stages start ``runtime/ray/offline.OfflineHost``)."""

    host: type = RoleHost

    def __init__(self, plan: Plan, specs: Sequence[HostSpec]):
        self.plan = plan
        self.specs = list(specs)
        self.actors: list[Any] = []
        self.pgs: list[Any] = []
        self.info: list[dict[str, Any]] = []
        self.spans: list[Span] = []

    def start(self) -> None:
        check_resources(self.plan)
        remote = ray.remote(self.host)
        for group in self.plan.groups:
            pg = placement_group([bundle(s) for s in group.slots], strategy="PACK")
            self.pgs.append(pg)
            try:
                ray.get(pg.ready(), timeout=READY_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                self.close()
                raise UserError(
                    f"Ray could not reserve group '{group.name}' ({len(group.slots)} slots, "
                    f"{_fmt(_sum(bundle(s) for s in group.slots))}) within "
                    f"{READY_TIMEOUT_S:.0f}s; the cluster has {_fmt(ray.cluster_resources())}",
                    where="placement",
                ) from None
            for index, slot in enumerate(group.slots):
                spec = self.specs[self.plan.slots.index(slot)]
                options = bundle(slot)
                self.actors.append(
                    remote.options(
                        num_cpus=options["CPU"],
                        num_gpus=options.get("GPU", 0.0),
                        max_restarts=0,
                        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, index),
                    ).remote(spec)
                )
        order = [self.plan.slots.index(s) for g in self.plan.groups for s in g.slots]
        self.actors = [self.actors[order.index(rank)] for rank in range(len(order))]
        self._join_world()

    def _join_world(self) -> None:
        master = self.actors[0]
        addr, port = ray.get(master.address.remote())
        refs = [a.setup.remote(addr, port) for a in self.actors]
        calls = [CallInfo(s.rank, s.label, "setup", 0, "setup") for s in self.specs]
        self.info = self.wait(refs, calls)

    def wait(self, refs: Sequence[Any], calls: Sequence[CallInfo]) -> list[Any]:
        """The results of ``refs`` in order; the first dead worker raises WorkerFailure."""
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    results[index[ref]] = self._get(ref, calls[index[ref]])
                except ray.exceptions.RayTaskError:
                    self._raise_dead_peer(pending, [calls[index[r]] for r in pending])
                    raise
        return results

    def _get(self, ref, call: CallInfo) -> Any:
        try:
            return ray.get(ref)
        except DEATH_ERRORS as err:
            raise self.failure(call, err) from None
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, (UserError, WorkerFailure)):
                raise cause from None
            raise

    def _raise_dead_peer(self, refs: Sequence[Any], calls: Sequence[CallInfo]) -> None:
        """A call failed with an error of its own: when a peer of the same calls died, that
        death is the cause (a survivor's collective fails at once with "connection reset"
        under gloo), so name the dead worker instead. Waits at most ``PEER_DEATH_S``."""
        deadline = time.monotonic() + PEER_DEATH_S
        pending = list(refs)
        while pending and (left := deadline - time.monotonic()) > 0:
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            for ref in done:
                try:
                    ray.get(ref)
                except DEATH_ERRORS as err:
                    raise self.failure(calls[list(refs).index(ref)], err) from None
                except Exception:  # noqa: BLE001 (another survivor's symptom)
                    continue

    def failure(self, call: CallInfo, err: Exception) -> WorkerFailure:
        pid = self.info[call.rank]["pid"] if call.rank < len(self.info) else "?"
        what = "while starting" if call.method == "setup" else f"during {call.role}.{call.method}"
        spec = self.specs[call.rank]
        roles = ", ".join(r.value for r in self.plan.roles_on(spec.slot) if r in spec.roles)
        message = (
            f"worker {call.label} (pid {pid}; roles: {roles}) died {what}: it was {call.role} "
            f"rank {call.role_rank} ({type(err).__name__})"
        )
        return WorkerFailure(message, role=call.role, rank=call.role_rank)

    def write_workers(self, path: Path) -> None:
        """Rank, slot, roles and pid of every worker, as JSON (atomically: tests and users
        read it while the run goes on)."""
        rows = [
            {
                "rank": spec.rank,
                "worker": spec.label,
                "slot": spec.slot.label,
                "roles": info["roles"],
                "pid": info["pid"],
            }
            for spec, info in zip(self.specs, self.info, strict=True)
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        tmp.replace(path)

    def pids(self) -> list[int]:
        return [info["pid"] for info in self.info]

    def close(self) -> None:
        """Stop every worker and free its slots (idempotent; safe after a failure): each is
        first asked to close its engine and leave its process group (``RoleHost.shutdown``,
        at most SHUTDOWN_TIMEOUT_S for all), then killed."""
        with contextlib.suppress(Exception):  # a dead worker, or Ray gone: kill anyway
            pending = [actor.shutdown.remote() for actor in self.actors]
            ray.wait(pending, num_returns=len(pending), timeout=SHUTDOWN_TIMEOUT_S)
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already dead, or Ray is gone
                ray.kill(actor, no_restart=True)
        for pg in self.pgs:
            with contextlib.suppress(Exception):
                remove_placement_group(pg)
        self.actors, self.pgs = [], []


def _sum(bundles) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0.0) + v
    return out
