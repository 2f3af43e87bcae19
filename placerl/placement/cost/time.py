"""Seconds of each phase of an RL step on one worker: every term a named formula.

FLOPs are ``ModelShape.flops_per_token`` (2 per multiplied parameter + attention) at the mean
context of the pass; backward costs twice the forward (Kaplan et al. 2020), gradient
checkpointing adds one forward. A pass over ``n`` micro-batches pays ``call_overhead`` per
forward and per backward call (a value model's own, ``value_call_overhead``, where
profiled). Rates come from a ``Machine`` (profiled, or peak × efficiency).

- ``prefill_s`` + ``decode_s``: generation. Distinct prompts are prefilled once (placerl's
  sampler shares a prompt's KV cache across its samples); then ``response_len`` decode steps of
  ``rows`` rows at the mean context ``prompt + response/2``. A decode step costs
  ``layers·τ`` (launch/Python overhead per block) plus the weight and KV-cache bytes streamed at
  ``memory_bw`` and the rows' FLOPs at ``decode_flops``, combined as max (GPU roofline: memory
  and compute overlap) or sum (CPU: they do not). This intercept is why two workers decoding
  half the rows each are barely faster than one decoding all of them.
- ``forward_s``: reference, values, reward-model scores, recomputed π_old: one forward over the
  rows, prompt computed once per group (shared-prefix forward).
- ``train_s``: ``epochs`` forward+backward passes, one optimizer step per minibatch
  (``optimizer_params_per_s``), plus gradient communication (``collectives``).
- ``sync_s``: trainer → rollout weight broadcast (Separate) in the compute dtype; ``copy_s``:
  the in-process copy into a lagging rollout's shadow.
- ``offload_s``: with ``placement.offload`` on a GPU, a colocated role's state goes to host
  memory and back once per step: ``2 · bytes / host_bw``.
"""

from __future__ import annotations

from math import ceil

from placerl.placement.cost.collectives import all_reduce_s
from placerl.placement.cost.machine import Machine
from placerl.placement.cost.shapes import ModelShape
from placerl.placement.cost.workload import Workload
from placerl.placement.plan.plan import DeviceSlot


def micro_batches(rows: int, micro_batch: int | None) -> int:
    """Forward/backward calls a worker makes over ``rows`` rows."""
    return max(1, ceil(rows / micro_batch)) if micro_batch else 1


def pass_tokens(w: Workload, prompts: float, rows: float) -> float:
    """Tokens of one pass over ``rows`` rows of ``prompts`` distinct prompts."""
    return prompts * w.prompt_len + rows * w.response_len


def prefill_s(shape: ModelShape, m: Machine, slot: DeviceSlot, w: Workload, prompts: float):
    """Distinct prompts through the model once, at context ``prompt/2``."""
    flops = prompts * w.prompt_len * shape.flops_per_token(w.prompt_len / 2)
    return flops / m.rate(m.prefill_flops, slot) + m.call_overhead


def decode_step_s(
    shape: ModelShape,
    m: Machine,
    slot: DeviceSlot,
    rows: float,
    context: float,
    dtype_bytes: int,
    tp: int = 1,
) -> float:
    """One decode step of ``rows`` rows attending to ``context`` tokens, on an engine of
    ``tp`` tensor-parallel GPUs: each streams 1/tp of the weights and KV cache and does 1/tp
    of the FLOPs, and every block all-reduces its attention and MLP outputs (2 per block,
    ``rows·h`` values each: Megatron-LM, Shoeybi et al. 2019)."""
    streamed = shape.params * dtype_bytes + rows * context * shape.kv_bytes_per_token(dtype_bytes)
    memory = streamed / tp / m.rate(m.memory_bw, slot)
    compute = rows * shape.flops_per_token(context) / tp / m.decode_rate(slot)
    work = max(memory, compute) if m.roofline else memory + compute
    comm = 0.0
    if tp > 1:
        act = rows * shape.hidden * dtype_bytes
        comm = 2 * shape.layers * all_reduce_s(act, tp, m.intra_bw, m.collective_latency)
    return shape.layers * m.overhead("decode_overhead_per_layer", slot) + work + comm


def generate_s(shape: ModelShape, m: Machine, slot: DeviceSlot, w: Workload, rows: float) -> float:
    """Prefill plus ``response_len`` decode steps of an engine sampling ``rows`` rows (a
    tensor-parallel engine of ``gen_tp`` GPUs shares the prefill FLOPs too)."""
    tp = max(1, w.gen_tp)
    prompts = rows / w.samples
    context = w.prompt_len + w.response_len / 2
    steps = w.response_len * decode_step_s(shape, m, slot, rows, context, w.dtype_bytes, tp)
    prefill = prefill_s(shape, m, slot, w, prompts)
    return (prefill - m.call_overhead) / tp + m.call_overhead + steps


def pass_flops(shape: ModelShape, w: Workload, prompts: float, rows: float) -> float:
    """FLOPs of one forward over ``rows`` rows of ``prompts`` distinct prompts: every token
    through the blocks at the pass's mean context, the LM head on the response tokens only
    (placerl's chunked head projects just the positions it scores: models/logprobs.py)."""
    context = (w.prompt_len + w.response_len) / 2
    head = 0.0 if shape.scalar_head else 2.0 * shape.hidden * shape.vocab
    tokens = pass_tokens(w, prompts, rows)
    return tokens * (shape.flops_per_token(context) - head) + rows * w.response_len * head


def pass_prompts(shape: ModelShape, w: Workload, rows: float) -> float:
    """Distinct prompts a pass computes: a group's prompt once for the policy's shared-prefix
    forward (roles/common.py), every row's for a value model (critic, reward model)."""
    return rows if shape.scalar_head else rows / w.samples


def shares_prompts(shape: ModelShape, w: Workload) -> bool:
    """The policy computes a group's prompt once (several samples per prompt): its
    shared-prompt forward, with that forward's own fixed cost (``prefix_*_overhead``)."""
    return not shape.scalar_head and w.samples > 1


def forward_rate(shape: ModelShape, m: Machine, slot: DeviceSlot) -> float:
    per_thread = m.value_forward_flops if shape.scalar_head else m.forward_flops
    return m.rate(per_thread or m.forward_flops, slot)


def train_rate(shape: ModelShape, m: Machine, slot: DeviceSlot) -> float:
    per_thread = m.value_train_flops if shape.scalar_head else m.train_flops
    return m.rate(per_thread or m.train_flops, slot)


def forward_s(
    shape: ModelShape,
    m: Machine,
    slot: DeviceSlot,
    w: Workload,
    rows: float,
    micro_batch: int | None,
) -> float:
    """One forward over ``rows`` rows (reference, values, scores, π_old)."""
    flops = pass_flops(shape, w, pass_prompts(shape, w, rows), rows)
    calls = micro_batches(int(rows), micro_batch)
    call = m.overhead("call_overhead", slot, shape.scalar_head, shares_prompts(shape, w))
    return flops / forward_rate(shape, m, slot) + calls * call


def train_compute_s(
    shape: ModelShape,
    m: Machine,
    slot: DeviceSlot,
    w: Workload,
    rows: float,
    micro_batch: int | None,
    checkpointing: bool,
) -> float:
    """``epochs`` forward+backward passes: 3 forwards' FLOPs (4 with checkpointing); per
    minibatch the update's fixed cost (``update_overhead``: loss, clip, guard, stats) and two
    calls (forward, backward) per micro-batch beyond the first."""
    per_forward = pass_flops(shape, w, pass_prompts(shape, w, rows), rows)
    factor = 4.0 if checkpointing else 3.0
    extra = micro_batches(ceil(rows / w.minibatches), micro_batch) - 1
    value, prefix = shape.scalar_head, shares_prompts(shape, w)
    per_step = m.overhead("update_overhead", slot, value, prefix) + 2 * extra * m.overhead(
        "call_overhead", slot, value, prefix
    )
    return w.epochs * (factor * per_forward / train_rate(shape, m, slot) + w.minibatches * per_step)


def trained_params(shape: ModelShape, w: Workload) -> int:
    from placerl.placement.cost.memory import lora_params

    return lora_params(shape, w.lora_rank) if w.lora_rank else shape.params


def optimizer_s(shape: ModelShape, m: Machine, slot: DeviceSlot, w: Workload, shards: int):
    """Adam over the worker's share of the trained parameters, once per minibatch."""
    steps = w.epochs * w.minibatches
    return steps * trained_params(shape, w) / shards / m.rate(m.optimizer_params_per_s, slot)


def sync_s(shape: ModelShape, m: Machine, w: Workload, cross_node: bool, buckets_mb: float = 64):
    """Broadcast the policy from the trainer to the rollout copy, bucket by bucket, and copy it
    into the rollout's model. Profiled (``m.sync_bw``): placerl's own transport as measured
    between two processes, packing, unpacking and fingerprints included, ``sync_latency +
    bytes/sync_bw`` (plus the link across nodes); on paper: ``bytes/bw + buckets·latency +
    bytes/memory_bw``."""
    nbytes = shape.params * w.dtype_bytes
    if m.sync_bw > 0:
        return m.sync_latency + nbytes / m.sync_bw + (nbytes / m.inter_bw if cross_node else 0.0)
    bw = m.inter_bw if cross_node else m.intra_bw
    buckets = ceil(nbytes / (buckets_mb * 2**20))
    return nbytes / bw + buckets * m.collective_latency + nbytes / m.memory_bw


def copy_s(shape: ModelShape, m: Machine, w: Workload) -> float:
    """Copy the policy into a shadow copy in the same process and fingerprint it (a lagging
    rollout beside the trainer): ``bytes/copy_bw`` where profiled, else ``bytes/memory_bw``."""
    nbytes = shape.params * w.dtype_bytes
    return nbytes / (m.copy_bw if m.copy_bw > 0 else m.memory_bw)


def offload_s(state_bytes: float, m: Machine) -> float:
    """A role's state to host memory and back once per step."""
    return 2.0 * state_bytes / m.host_bw
