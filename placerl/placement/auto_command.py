"""``placerl plan CONFIG --auto [--json] [--cluster 16xH100]``: search and explain.

On this machine the cost model's constants come from the stored profile (``placerl profile``),
else built-in CPU defaults, and the one-process ``local`` plan competes too. With
``--cluster`` they come from the hardware specs (``placerl/placement/hardware``): a plan on
paper, nothing is measured or started.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from placerl.placement import explain
from placerl.placement.machine import CPU_DEFAULT, Machine, from_profile, from_spec
from placerl.placement.plan import Cluster, Plan
from placerl.placement.search import SearchResult, search
from placerl.placement.shapes import ModelShape
from placerl.placement.workload import Workload, workload_from_config
from placerl.types import Role


def machine_for(device: str, shape: ModelShape, profile: str | None) -> tuple[Machine, str]:
    """The profiled constants (named file, or the store's), else the defaults; and a note."""
    from placerl.placement.profile_store import find_profile, shape_key

    if profile:
        raw = json.loads(Path(profile).read_text())
        return from_profile(raw), f"calibration: profile {profile}"
    found = find_profile(device, shape)
    if found:
        raw, path, exact = found
        how = (
            "reused"
            if exact
            else (f"reused (measured on shape {raw['key']['shape']}, not this {shape_key(shape)})")
        )
        return from_profile(raw), f"calibration: profile {path} {how}"
    if device != "cpu":
        from placerl.placement.hardware import device_specs, engine_spec

        for name, spec in device_specs().items():
            if name in device.upper():
                return from_spec(spec, engine_spec("placerl")), f"calibration: {spec.name} specs"
    return CPU_DEFAULT, f"calibration: {CPU_DEFAULT.source}"


def here(cfg) -> tuple[Cluster, list[Plan]]:
    """This machine's (or the Ray cluster's) slots, and the local plan."""
    from placerl.placement.cluster import cluster_from_ray, detect_cluster, local_slot
    from placerl.placement.from_config import local_plan, needed_roles

    p = cfg.placement
    if p.ray_address:
        cluster = cluster_from_ray(
            p.ray_address, num_workers=p.num_workers, threads_per_worker=p.threads_per_worker
        )
        return cluster, []
    cluster = detect_cluster(p.num_workers, p.threads_per_worker, p.device)
    local = local_plan(needed_roles(cfg), Cluster((local_slot(p.device),)), p.max_staleness)
    return cluster, [local]


def device_name(cluster: Cluster) -> str:
    if cluster.slots[0].kind == "cpu":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else "gpu"


def with_named_size(w: Workload, size: str) -> Workload:
    """Every model of ``w`` at a named Llama shape (value models with a scalar head)."""
    from placerl.placement.shapes import named_shape

    shape = named_shape(size)
    value = shape.as_value_model()
    shapes = {r: value if r in (Role.CRITIC, Role.REWARD) else shape for r in w.shapes}
    return w.with_(shapes=shapes)


def run_search(
    cfg, cluster_text: str | None, profile: str | None, size: str | None = None
) -> tuple[SearchResult, Workload]:
    w = workload_from_config(cfg)
    if size:
        w = with_named_size(w, size)
    if cluster_text:
        from placerl.placement.hardware import engine_spec, parse_cluster, spec_cluster

        count, spec = parse_cluster(cluster_text)
        cluster, extra = spec_cluster(count, spec), []
        m = from_spec(spec, engine_spec(w.engine))
        note = f"calibration: {spec.name} specs (on paper, nothing profiled), engine {w.engine}"
        if w.precision == "fp32":
            w = w.with_(precision="bf16")
            note += "; bf16 assumed on GPU"
    else:
        cluster, extra = here(cfg)
        m, note = machine_for(device_name(cluster), w.shapes[Role.ACTOR], profile)
    from placerl.placement.auto_settings import explicit, key_of

    fixed = explicit(cfg)  # what the user set, auto holds to: so does this ranking
    result = search(w, cluster, m, extra, fixed=fixed)
    result.notes.append(note)
    if fixed:
        held = ", ".join(f"{key_of(k)}={v}" for k, v in fixed.items())
        result.notes.append(f"held to the settings you set: {held}")
    return result, w


def auto_plan_command(cfg, args: argparse.Namespace) -> int:
    result, w = run_search(cfg, args.cluster, args.profile, args.model_size)
    if args.json:
        print(json.dumps(explain.search_json(result, args.top), indent=2))
        return 0 if result.pick else 2
    console = Console(width=None if Console().is_terminal else 140)
    shape = w.shapes[Role.ACTOR]
    console.print(
        f"workload: {w.stage}, {w.prompts} prompts × {w.samples} samples, prompt ~{w.prompt_len:.0f}"
        f" + response {w.response_len:.0f} tokens, policy {shape.name} "
        f"({shape.params / 1e6:.1f}M params), {w.precision}, max_staleness {w.max_staleness}",
        highlight=False,
    )
    for note in result.notes:
        console.print(note, highlight=False, markup=False)
    console.print(explain.table(result, args.top))
    for line in explain.infeasible_lines(result):
        console.print(f"- {line}", highlight=False, markup=False)
    feasible = sum(s.feasible for s in result.ranked)
    console.print(
        f"searched {result.considered} candidates ({result.pruned} pruned, {feasible} of "
        f"{len(result.ranked)} kept fit) in {result.seconds:.2f} s",
        highlight=False,
    )
    if result.pick is None:
        console.print("no plan fits", highlight=False)
        return 2
    console.print(f"pick: {result.pick.name}: {explain.why(result)}", highlight=False, markup=False)
    return 0
