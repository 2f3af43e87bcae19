"""Collective communication times: ring algorithms over ``n`` workers (Thakur et al. 2005;
the NCCL and gloo ring implementations), ``bw`` the per-worker bus bandwidth, ``latency`` the
cost of one ring step. A group that spans nodes runs at the inter-node bandwidth.

- all-reduce: ``2(n-1)/n · bytes / bw + 2(n-1) · latency``;
- all-gather and reduce-scatter: ``(n-1)/n · bytes / bw + (n-1) · latency`` (``bytes``: the
  whole, gathered tensor);
- broadcast (pipelined ring): ``bytes / bw + (n-1) · latency``.

Gradient communication of a trained role per ``train_s`` call (``grad_comm_s``):

- ``none`` (DDP): one all-reduce of the fp32 gradients per optimizer step (our runtime
  reduces after the backward, so it is not overlapped);
- ``full`` (FSDP): per micro-batch, an all-gather of the parameters for the forward and again
  for the backward, and a reduce-scatter of the gradients (ZeRO-3's 3× traffic);
- ``hybrid`` (shard groups of ``s``): the same inside each shard group, plus an all-reduce of
  each 1/s shard across the ``n/s`` replicas per optimizer step.
"""

from __future__ import annotations

from placerl.placement.cost.machine import Machine


def all_reduce_s(nbytes: float, n: int, bw: float, latency: float) -> float:
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * latency


def all_gather_s(nbytes: float, n: int, bw: float, latency: float) -> float:
    if n <= 1:
        return 0.0
    return (n - 1) / n * nbytes / bw + (n - 1) * latency


reduce_scatter_s = all_gather_s


def broadcast_s(nbytes: float, n: int, bw: float, latency: float) -> float:
    if n <= 1:
        return 0.0
    return nbytes / bw + (n - 1) * latency


def link_bw(m: Machine, nodes: int) -> float:
    return m.intra_bw if nodes <= 1 else m.inter_bw


def grad_comm_s(
    params: float,
    m: Machine,
    dp: int,
    sharding: str,
    shard_size: int | None,
    nodes: int,
    optimizer_steps: int,
    micro_calls: int,
    param_bytes: int,
) -> float:
    """Gradient (and parameter) traffic of one update of a role on ``dp`` workers."""
    grads = params * 4.0
    weights = params * float(param_bytes)
    lat = m.collective_latency
    if sharding == "none":
        return optimizer_steps * all_reduce_s(grads, dp, link_bw(m, nodes), lat)
    s = dp if sharding == "full" else (shard_size or 1)
    shard_nodes = nodes if s == dp else max(1, -(-s // m.devices_per_node))
    bw = link_bw(m, shard_nodes)
    per_micro = 2 * all_gather_s(weights, s, bw, lat) + reduce_scatter_s(grads, s, bw, lat)
    total = micro_calls * per_micro
    if sharding == "hybrid" and dp > s:
        total += optimizer_steps * all_reduce_s(grads / s, dp // s, link_bw(m, nodes), lat)
    return total
