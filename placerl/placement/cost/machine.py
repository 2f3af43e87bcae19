"""The cost model's constants for one kind of device slot: a ``Machine``.

Three sources, one dataclass:

- ``from_spec(DeviceSpec, EngineSpec)``: a GPU on paper, peak × efficiency from
  ``placerl/placement/hardware`` (``--cluster 16xH100``);
- ``from_profile(dict)``: what ``placerl profile`` measured on this machine;
- ``CPU_DEFAULT``: round figures for a recent x86 core, used only when no profile exists
  (and said so by ``placerl plan --auto``).

CPU slots scale with their torch threads: a rate measured per thread is multiplied by
``threads ** thread_exponent`` (the profile measures 1 thread and all of them to fit it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from placerl.placement.cost.hardware import GB, DeviceSpec, EngineSpec
from placerl.placement.plan.plan import DeviceSlot


@dataclass(frozen=True)
class Machine:
    name: str
    kind: str  # cpu | gpu
    train_flops: float  # FLOP/s of forward+backward, per thread (CPU) or per GPU
    forward_flops: float  # FLOP/s of forward-only passes (scoring, reference, values)
    prefill_flops: float  # FLOP/s of the engine's prompt prefill
    decode_flops: float  # FLOP/s of a decode step's matmuls (few rows: below forward_flops)
    memory_bw: float  # bytes/s a decode step streams weights and KV cache at
    decode_overhead_per_layer: float  # s per block per decode step (launches, Python)
    call_overhead: float  # s per forward or backward call of a micro-batch (Python, launch)
    optimizer_params_per_s: float  # Adam streams ~16 B/param read + 12 B/param written
    intra_bw: float  # collective bytes/s per device inside a node (bus bandwidth)
    inter_bw: float  # across nodes
    collective_latency: float  # s per ring step
    host_bw: float  # device <-> host copies (offload), bytes/s
    rpc_latency: float  # s per remote phase call from the controller (Ray), 0 in-process
    reward_per_row: float  # s per row of a rule reward (Python)
    # a value model's (critic, reward model) rates; 0: the policy's (train_flops, forward_flops)
    value_train_flops: float = 0.0
    value_forward_flops: float = 0.0
    # s per optimizer step of an update besides FLOPs and Adam: loss, gradient clip, the
    # non-finite guard, stats read back (profiled from ActorWorker.update's intercept). It can
    # be negative: the update's own Adam step, on warm caches, is faster than the standalone
    # step ``optimizer_params_per_s`` times; the sum is the fitted intercept either way
    update_overhead: float = 0.0
    # an update on a runtime worker (a Ray actor) over the same update in-process: the worker
    # runtime's own threads share its cores (profiled; 1 in-process and on paper)
    worker_update_factor: float = 1.0
    # s a step's controller spends outside every phase call: the next prompts, the metrics,
    # the log and, with workers, launching the sample (uniforms, the row split, the object
    # store) and the workers' spans; in-process and with runtime workers (profiled on tiny
    # real runs: profiling/runs.py)
    step_overhead: float = 0.0
    worker_step_overhead: float = 0.0
    # CPU: the intercepts measured on all ``profiled_threads`` threads (0: as on 1 thread); a
    # slot's are interpolated linearly in its threads (``overhead``)
    update_overhead_all: float = 0.0
    call_overhead_all: float = 0.0
    profiled_threads: int = 1
    # CPU decode on all profiled threads: its per-layer intercept, and how its FLOP rate
    # scales with threads (few-row matmuls scale worse than training's; -1: thread_exponent)
    decode_overhead_per_layer_all: float = 0.0
    decode_thread_exponent: float = -1.0
    # a value model's (critic, reward model) intercepts, on 1 and on all profiled threads: its
    # update has no log-prob head or clipped policy loss, its forward no chunked head, so they
    # are about half the policy's (profiled); None: the policy's
    value_update_overhead: float | None = None
    value_update_overhead_all: float | None = None
    value_call_overhead: float | None = None
    value_call_overhead_all: float | None = None
    # the policy's shared-prompt forward (GRPO groups: a prompt computed once for its samples)
    # costs this much more per update step and per forward call than the plain one (finding
    # the distinct prompts, expanding their cache; profiled), on 1 and all profiled threads
    prefix_update_overhead: float = 0.0
    prefix_update_overhead_all: float = 0.0
    prefix_call_overhead: float = 0.0
    prefix_call_overhead_all: float = 0.0
    # CPU: the rate of one slot while the node's other slots compute too, over its rate alone
    # (shared caches and memory bandwidth; profiled with two processes at once)
    shared_core_factor: float = 1.0
    # … and the per-call intercepts' slow-down then (>= 1; profiled on a small decode)
    shared_overhead_factor: float = 1.0
    # placerl's own weight sync between two processes (runtime/sync/transport.py: pack,
    # broadcast, unpack, and the guard's fingerprints on both sides): a sync of B bytes takes
    # ``sync_latency + B / sync_bw``; and an in-process copy with its fingerprint (a lagging
    # rollout's shadow beside the trainer) ``B / copy_bw``. Profiled on CPU (profiling/
    # collectives.py); 0: not measured, the collective and memory rates stand in
    sync_bw: float = 0.0
    sync_latency: float = 0.0
    copy_bw: float = 0.0
    devices_per_node: int = 1
    roofline: bool = True  # decode = max(memory, compute) (GPU) or their sum (CPU)
    thread_exponent: float = 1.0
    source: str = ""
    # resident bytes of a process before its models (profiling/runs.py): one placerl process,
    # and a Ray worker; CPU slots only (on a GPU the host process is no device memory)
    process_bytes: float = 0.0
    worker_bytes: float = 0.0

    def rate(self, per_thread: float, slot: DeviceSlot | None) -> float:
        """A per-slot rate: CPU rates scale with the slot's threads; a slot with fewer threads
        than the profiled cores shares the node with other slots (``shared_core_factor``)."""
        return self._scaled(per_thread, slot, self.thread_exponent)

    def decode_rate(self, slot: DeviceSlot | None) -> float:
        """``decode_flops`` of ``slot``, scaled by threads with the decode's own exponent."""
        exponent = self.decode_thread_exponent
        return self._scaled(
            self.decode_flops, slot, self.thread_exponent if exponent < 0 else exponent
        )

    def _scaled(self, per_thread: float, slot: DeviceSlot | None, exponent: float) -> float:
        if self.kind == "cpu" and slot is not None:
            shared = self.shared_core_factor if slot.threads < self.profiled_threads else 1.0
            return per_thread * max(1, slot.threads) ** exponent * shared
        return per_thread

    def overhead(
        self, name: str, slot: DeviceSlot | None, value: bool = False, prefix: bool = False
    ) -> float:
        """``update_overhead`` or ``call_overhead`` of ``slot`` (a value model's with
        ``value``, where profiled; plus the shared-prompt forward's with ``prefix``): on CPU,
        between the 1-thread and the all-threads intercepts by the slot's threads."""
        if value:  # a value model reads every row's prompt: never the shared-prompt forward
            if getattr(self, f"value_{name}") is not None:
                name = f"value_{name}"
        elif prefix and getattr(self, f"prefix_{name}"):
            return self.overhead(name, slot) + self.overhead(f"prefix_{name}", slot)
        one, many = getattr(self, name), getattr(self, f"{name}_all") or 0.0
        if self.kind != "cpu" or slot is None or slot.kind != "cpu" or not many:
            return one
        if self.profiled_threads <= 1:
            return one
        if slot.threads < self.profiled_threads:  # other slots share the node's cores
            one *= self.shared_overhead_factor
        share = (min(slot.threads, self.profiled_threads) - 1) / (self.profiled_threads - 1)
        return one + max(0.0, share) * (many - one)

    def with_(self, **changes: Any) -> Machine:
        return replace(self, **changes)

    def scaled(self, speed: float) -> Machine:
        """This machine running ``speed`` times as fast (a uniformly slower or faster machine
        than the one profiled: ``conditions.compare``): every rate times ``speed``, every
        time per call or step divided by it; bytes stay."""
        changes: dict[str, Any] = {name: getattr(self, name) * speed for name in RATES}
        for name in TIMES:
            value = getattr(self, name)
            if value is not None:
                changes[name] = value / speed
        return replace(self, **changes, source=f"{self.source}, rescaled x{speed:.2f}")


# the Machine's rates (per second) and its times (seconds per call, layer, row or step)
RATES = (
    "train_flops",
    "forward_flops",
    "prefill_flops",
    "decode_flops",
    "memory_bw",
    "optimizer_params_per_s",
    "intra_bw",
    "inter_bw",
    "host_bw",
    "value_train_flops",
    "value_forward_flops",
    "sync_bw",
    "copy_bw",
)
TIMES = (
    "decode_overhead_per_layer",
    "decode_overhead_per_layer_all",
    "call_overhead",
    "call_overhead_all",
    "collective_latency",
    "rpc_latency",
    "reward_per_row",
    "update_overhead",
    "update_overhead_all",
    "step_overhead",
    "worker_step_overhead",
    "value_update_overhead",
    "value_update_overhead_all",
    "value_call_overhead",
    "value_call_overhead_all",
    "prefix_update_overhead",
    "prefix_update_overhead_all",
    "prefix_call_overhead",
    "prefix_call_overhead_all",
    "sync_latency",
)


def from_spec(spec: DeviceSpec, engine: EngineSpec) -> Machine:
    """A GPU from its published peaks: FLOP/s × efficiency, HBM × efficiency, links ×
    collective efficiency; decode efficiency and per-layer overhead from the engine."""
    peak = spec.bf16_dense_tflops * 1e12
    hbm = spec.hbm_tb_per_s * 1e12
    return Machine(
        name=spec.name,
        kind="gpu",
        train_flops=peak * spec.train_efficiency,
        forward_flops=peak * spec.forward_efficiency,
        prefill_flops=peak * engine.prefill_efficiency,
        decode_flops=peak * spec.forward_efficiency,
        memory_bw=hbm * engine.decode_bandwidth_efficiency,
        decode_overhead_per_layer=engine.decode_overhead_us_per_layer * 1e-6,
        call_overhead=2e-3,  # eager forward/backward of one micro-batch: launches + Python
        optimizer_params_per_s=hbm * spec.bandwidth_efficiency / 28,
        intra_bw=spec.nvlink_gb_per_s * GB * spec.collective_efficiency,
        inter_bw=spec.internode_gb_per_s * GB * spec.collective_efficiency,
        collective_latency=spec.collective_latency_us * 1e-6,
        host_bw=spec.host_gb_per_s * GB * spec.bandwidth_efficiency,
        rpc_latency=5e-3,
        reward_per_row=2e-5,
        update_overhead=4e-3,  # loss, clip and stats of an optimizer step: ~2 eager calls
        # the controller is a CPU process whatever the devices: the CPU profile's round figures
        step_overhead=2e-3,
        worker_step_overhead=6e-3,
        devices_per_node=spec.devices_per_node,
        roofline=True,
        source=f"spec {spec.name} with engine {engine.name}",
    )


CPU_DEFAULT = Machine(
    name="cpu (defaults, not profiled)",
    kind="cpu",
    train_flops=8e9,
    forward_flops=10e9,
    prefill_flops=10e9,
    decode_flops=4e9,
    memory_bw=10e9,
    decode_overhead_per_layer=1.2e-4,
    call_overhead=3e-3,
    optimizer_params_per_s=2e9 / 28,
    intra_bw=2e9,
    inter_bw=1e9,
    collective_latency=1e-4,
    host_bw=10e9,
    rpc_latency=5e-3,
    reward_per_row=2e-5,
    update_overhead=6e-3,
    step_overhead=2e-3,  # profiling/runs.py's tiny runs on a 2-core x86 VM: 1-2 ms, 5-7 ms
    worker_step_overhead=6e-3,
    devices_per_node=64,
    roofline=False,
    thread_exponent=0.85,
    source="built-in CPU defaults (run `placerl profile` to measure this machine)",
    process_bytes=480 * 2**20,  # profiling/runs.py's tiny runs on a 2-core x86 VM, Python 3.11
    worker_bytes=470 * 2**20,
)


def from_profile(profile: dict[str, Any]) -> Machine:
    """The constants ``placerl profile`` fitted (its ``machine`` section)."""
    fields = {k: v for k, v in profile["machine"].items() if k in Machine.__dataclass_fields__}
    if fields.get("kind") == "cpu":  # a profile from before the memory probes
        fields.setdefault("process_bytes", CPU_DEFAULT.process_bytes)
        fields.setdefault("worker_bytes", CPU_DEFAULT.worker_bytes)
    return Machine(**fields)
