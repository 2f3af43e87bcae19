"""Accelerator specs as data: one JSON file per device kind, plus the generation engines.

Each file gives the published peak figures (dense bf16 FLOP/s, HBM bandwidth, NVLink and
inter-node bandwidth per GPU, memory) and the efficiency factors the cost model applies to
them; its ``source`` field says where each number comes from and which are assumptions.
``placerl plan --auto --cluster 16xH100`` plans on these without profiling.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from placerl.errors import UserError
from placerl.placement.plan.plan import Cluster, DeviceSlot

HERE = Path(__file__).resolve().parent
GB = 1e9


@dataclass(frozen=True)
class DeviceSpec:
    """Published peaks (per device) and the share of them a workload reaches."""

    name: str
    memory_gb: float
    bf16_dense_tflops: float
    hbm_tb_per_s: float
    nvlink_gb_per_s: float  # one direction, per GPU
    internode_gb_per_s: float  # one direction, per GPU (its NIC share)
    host_gb_per_s: float  # host <-> device copies (PCIe)
    devices_per_node: int
    train_efficiency: float  # achieved / peak FLOP/s in forward+backward (MFU)
    forward_efficiency: float  # the same for forward-only passes (prefill, scoring)
    bandwidth_efficiency: float  # achieved / peak HBM bandwidth
    collective_efficiency: float  # achieved bus bandwidth / link bandwidth
    collective_latency_us: float  # per collective step (ring hop)
    source: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineSpec:
    """How well a generation engine uses a GPU in decode and prefill."""

    name: str
    decode_bandwidth_efficiency: float
    decode_overhead_us_per_layer: float
    prefill_efficiency: float
    source: str


@cache
def device_specs() -> dict[str, DeviceSpec]:
    """Every spec file, keyed by upper-case name and alias."""
    specs: dict[str, DeviceSpec] = {}
    for path in sorted(HERE.glob("*.json")):
        if path.name == "engines.json":
            continue
        raw = json.loads(path.read_text())
        spec = DeviceSpec(**{**raw, "aliases": tuple(raw.get("aliases", ()))})
        for key in (spec.name, *spec.aliases):
            specs[key.upper()] = spec
    return specs


@cache
def engine_specs() -> dict[str, EngineSpec]:
    raw = json.loads((HERE / "engines.json").read_text())
    return {name: EngineSpec(name=name, **fields) for name, fields in raw.items()}


def device_spec(name: str) -> DeviceSpec:
    specs = device_specs()
    spec = specs.get(name.upper())
    if spec is None:
        known = sorted({s.name for s in specs.values()})
        raise UserError(f"unknown device {name!r}; known: {', '.join(known)}", where="--cluster")
    return spec


def engine_spec(name: str) -> EngineSpec:
    specs = engine_specs()
    if name not in specs:
        raise UserError(f"unknown engine {name!r}; known: {', '.join(specs)}", where="engine")
    return specs[name]


def parse_cluster(text: str) -> tuple[int, DeviceSpec]:
    """``16xH100`` → (16, the H100 spec)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*([A-Za-z0-9-]+)\s*", text)
    if not match or int(match.group(1)) < 1:
        raise UserError(f"expected COUNTxDEVICE such as 16xH100, got {text!r}", where="--cluster")
    return int(match.group(1)), device_spec(match.group(2))


def spec_cluster(count: int, spec: DeviceSpec) -> Cluster:
    """``count`` GPUs of ``spec``, ``devices_per_node`` to a node."""
    per = spec.devices_per_node
    memory = int(spec.memory_gb * GB)
    return Cluster(tuple(DeviceSlot("gpu", i % per, i // per, 1, memory) for i in range(count)))
