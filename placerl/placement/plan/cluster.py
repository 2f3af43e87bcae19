"""What hardware a Plan may use: a ``Cluster`` of device slots.

A slot is what one worker process is pinned to. On a GPU machine that is one visible GPU (with
its memory, so validation can check that the models fit). On a CPU machine the cores are cut
into ``num_workers`` slots of ``threads_per_worker`` torch threads each: two workers on a
16-core box get 8 threads each, so several roles can compute at once without oversubscribing.
Several nodes are described through Ray: ``cluster_from_ray_nodes`` turns the per-node resource
dicts of ``ray.nodes()`` into slots, so it can be tested with a plain dict and no Ray.

torch and ray are imported inside the functions that need them, so building Plans (and
``placerl plan`` on a laptop) stays cheap.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from placerl.errors import UserError
from placerl.placement.plan.plan import Cluster, DeviceSlot

PROBE_TIMEOUT_S = 5.0  # to open a TCP connection to a given Ray address
DEFAULT_CPU_WORKERS = 2  # CPU slots when the config does not say
DeviceChoice = Literal["auto", "cpu", "gpu"]


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity mask
        return os.cpu_count() or 1


def cpu_cluster(
    num_workers: int | None = None, threads_per_worker: int | None = None, cores: int | None = None
) -> Cluster:
    """``num_workers`` CPU slots on one node; threads default to an even share of the cores."""
    workers = DEFAULT_CPU_WORKERS if num_workers is None else num_workers
    if workers < 1:
        raise UserError(f"needs at least 1 worker, got {workers}", where="placement.num_workers")
    cores = cores or available_cores()
    threads = threads_per_worker or max(1, cores // workers)
    if threads < 1:
        raise UserError(
            f"needs at least 1 thread, got {threads}", where="placement.threads_per_worker"
        )
    return Cluster(tuple(DeviceSlot("cpu", i, 0, threads) for i in range(workers)))


def gpu_cluster(memory_bytes: Sequence[int], num_workers: int | None = None) -> Cluster:
    """One slot per GPU of one node (the first ``num_workers`` of them when given)."""
    count = len(memory_bytes) if num_workers is None else num_workers
    if not 1 <= count <= len(memory_bytes):
        raise UserError(
            f"asks for {count} GPU workers but {len(memory_bytes)} GPUs are visible",
            where="placement.num_workers",
        )
    return Cluster(tuple(DeviceSlot("gpu", i, 0, 1, int(memory_bytes[i])) for i in range(count)))


def visible_gpu_memory() -> list[int]:
    """Total memory of each GPU torch can see; empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())
    ]


def detect_cluster(
    num_workers: int | None = None,
    threads_per_worker: int | None = None,
    device: DeviceChoice = "auto",
) -> Cluster:
    """The slots of this machine: its GPUs when there are any (or ``device="gpu"``), else
    ``num_workers`` CPU slots (default 2)."""
    gpus = visible_gpu_memory() if device in ("auto", "gpu") else []
    if device == "gpu" and not gpus:
        raise UserError("device is gpu but torch sees no CUDA device", where="placement.device")
    if gpus:
        return gpu_cluster(gpus, num_workers)
    return cpu_cluster(num_workers, threads_per_worker)


def local_slot(device: DeviceChoice = "auto", threads: int | None = None) -> DeviceSlot:
    """The one slot of the in-process (``local``) runtime: GPU 0, or ``threads`` cores
    (``placement.threads_per_worker``, as ``placerl/threads.py`` sets them; default every one)."""
    gpus = visible_gpu_memory() if device != "cpu" else []
    if device == "gpu" and not gpus:
        raise UserError("device is gpu but torch sees no CUDA device", where="placement.device")
    if gpus:
        return DeviceSlot("gpu", 0, 0, 1, gpus[0])
    return DeviceSlot("cpu", 0, 0, threads or available_cores())


def cluster_from_ray_nodes(
    nodes: Sequence[Mapping[str, Any]],
    gpu_memory_bytes: int | None = None,
    num_workers: int | None = None,
    threads_per_worker: int | None = None,
) -> Cluster:
    """Slots from ``ray.nodes()`` entries (or their bare ``Resources`` dicts).

    A node with GPUs gives one slot per GPU (Ray does not report GPU memory: pass
    ``gpu_memory_bytes`` to have memory checked). If no node has a GPU, every node's CPUs are
    cut into slots: ``num_workers`` slots per node (default 2) of ``threads_per_worker``
    threads (default an even share). Dead nodes are skipped.
    """
    resources = [n.get("Resources", n) for n in nodes if n.get("Alive", True)]
    if not resources:
        raise UserError("the Ray cluster has no live nodes", where="placement.ray_address")
    slots: list[DeviceSlot] = []
    use_gpus = any(r.get("GPU", 0) >= 1 for r in resources)
    for node, res in enumerate(resources):
        if use_gpus:
            count = int(res.get("GPU", 0))
            slots += [DeviceSlot("gpu", i, node, 1, gpu_memory_bytes) for i in range(count)]
            continue
        cores = max(1, int(res.get("CPU", 1)))
        per_node = cpu_cluster(num_workers, threads_per_worker, cores=cores)
        slots += [DeviceSlot("cpu", s.index, node, s.threads) for s in per_node.slots]
    return Cluster(tuple(slots))


def cluster_from_ray(address: str | None, **kwargs: Any) -> Cluster:
    """Connect to the Ray cluster at ``address`` and describe its live nodes.

    An address where nothing listens fails in seconds, as ``placerl train`` does
    (``probe``): ``ray.init`` alone retries for minutes."""
    import ray

    if address and not ray.is_initialized():
        probe(address)
    try:
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        nodes = ray.nodes()
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(
            f"cannot reach the Ray cluster at {address!r}: {exc}", where="placement.ray_address"
        ) from None
    return cluster_from_ray_nodes(nodes, **kwargs)


def probe(address: str) -> None:
    """Fail fast where nothing listens at ``host:port``: ``ray.init`` would retry for minutes."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"expected host:port (or 'auto'), got {address!r}", where="placement.ray_address"
        )
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise UserError(
            f"cannot reach a Ray cluster at {address!r}: {err.strerror or err}; start one "
            "with `ray start --head` or leave placement.ray_address empty for a local one",
            where="placement.ray_address",
        ) from None


def plan_resources(slots: Sequence[DeviceSlot]) -> dict[str, float]:
    """CPUs and GPUs a Plan's worker slots reserve: what ``runtime.ray.group.bundle`` asks
    Ray for (a GPU slot: 1 GPU + 1 CPU; a CPU slot: its threads)."""
    asked: dict[str, float] = {}
    for slot in slots:
        bundle = {"GPU": 1.0, "CPU": 1.0} if slot.kind == "gpu" else {"CPU": float(slot.threads)}
        for key, amount in bundle.items():
            asked[key] = asked.get(key, 0.0) + amount
    return asked


def capacity_problem(
    strategy: str, slots: Sequence[DeviceSlot], available: Mapping[str, float], where: str
) -> str | None:
    """The message ``placerl train`` would stop with when the Plan asks for more CPUs/GPUs
    than ``available`` (``where``: "the Ray cluster", "this machine"); None when it fits."""
    asked = plan_resources(slots)
    short = [k for k, v in asked.items() if available.get(k, 0.0) < v]
    if not short:
        return None
    want = ", ".join(f"{asked[k]:g} {k}" for k in sorted(asked))
    have = ", ".join(f"{available.get(k, 0.0):g} {k}" for k in short)
    return (
        f"the {strategy} plan asks for {want} ({len(slots)} workers); {where} has {have} in "
        "all. Use fewer placement.num_workers or threads_per_worker, or a larger cluster"
    )
