"""How well the planner predicts memory: predicted bytes per slot vs measured peak RSS.

A grid of RL workloads (the demo's 6M policy and a 31M Llama of hidden 512 / 8 layers; PPO
and GRPO; two batch sizes; with and without ``trainer.micro_batch_size``; local, and Flatten /
Separate on 2 Ray CPU workers), each trained for a few steps in a fresh process with the
training code of ``benchmarks/placement.py`` (``rl_config``, ``build_models``) and a checkpoint
at the end. Measured (``profiling/runs.py``'s ``run_fresh``, the same code the profile's probes run):
the peak RSS (``VmHWM`` of ``/proc/<pid>/status``) of every process that holds a slot's
models — the run's own process under ``local``; each Ray worker (its pid from the runtime,
read just before the runtime stops it) otherwise. Predicted: ``placement/cost/memory.py``'s ``memory_per_slot`` for the
Plan the run used, with the constants of the stored profile (``placerl profile``: its process
baselines), never fitted to these measurements. The controller's own peak under Ray is printed
too, but not scored: it is no slot (it holds the mirrors and the data).

    nice -n 19 python benchmarks/planner_memory.py [--steps 2] [--cells 12] [--profile FILE] [--terms]

Prints one row per slot and the summary line ``memory: median |error| X%, max Y% over N cells``
(a cell is one slot of one run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MiB = 2**20
SIZES = {
    "6M": {},  # the demo's policy (TinyLlamaSize())
    "31M": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 8},
}
# (model, algo, strategy, rows per step, trainer.micro_batch_size or None)
GRID = [
    ("6M", "ppo", "local", 64, None),
    ("6M", "ppo", "local", 64, 8),
    ("6M", "grpo", "local", 64, None),
    ("6M", "grpo", "local", 16, None),
    ("31M", "ppo", "local", 32, None),
    ("31M", "ppo", "local", 32, 4),
    ("31M", "grpo", "local", 32, None),
    ("31M", "grpo", "local", 64, 8),
    ("6M", "ppo", "flatten", 64, None),
    ("6M", "grpo", "separate", 64, None),
    ("31M", "grpo", "flatten", 32, None),
    ("31M", "ppo", "separate", 32, 4),
]
NEW_TOKENS = 8


def with_micro(cfg, micro: int | None):
    if micro is None:
        return cfg
    return cfg.model_copy(
        update={"trainer": cfg.trainer.model_copy(update={"micro_batch_size": micro})}
    )


# ---------------------------------------------------------------------------------- parent


def cell_config(spec: dict):
    """The cell's run config: the demo's RL stage (``benchmarks/placement.py``)."""
    import placement as bench

    ns = argparse.Namespace(warmup=0, steps=spec["steps"], new_tokens=NEW_TOKENS, rows=spec["rows"])
    base, rm, run_dir = Path(spec["base"]), Path(spec["rm"]), Path(spec["work"]) / "run"
    cfg = bench.rl_config(ns, spec["algo"], spec["strategy"], base, rm, run_dir)
    return with_micro(cfg, spec["micro"])


def predict(cfg, machine) -> list[dict]:
    """Predicted terms of every slot of the cell's Plan (``memory_per_slot``)."""
    from planner_accuracy import prompt_len

    from placerl.placement.cost.memory import memory_per_slot
    from placerl.placement.cost.workload import workload_from_config
    from placerl.placement.from_config import plan_from_config
    from placerl.placement.plan.cluster import cpu_cluster, local_slot
    from placerl.placement.plan.config import local_plan, needed_roles
    from placerl.placement.plan.plan import Cluster

    roles = needed_roles(cfg)
    if cfg.placement.strategy == "local":
        plan = local_plan(roles, Cluster((local_slot("cpu"),)), cfg.placement.max_staleness)
    else:
        plan = plan_from_config(cfg, cluster=cpu_cluster(2, 1, cores=2), model_params={})
    w = workload_from_config(cfg, roles).with_(prompt_len=prompt_len(cfg, Path(cfg.model.path)))
    return [
        {"slot": m.slot.label, "terms": m.terms, "total": m.total}
        for m in memory_per_slot(plan, w, **machine_kw(machine))
    ]


def machine_kw(machine) -> dict:
    """``machine=`` where this tree's ``memory_per_slot`` takes one (the CPU terms)."""
    import inspect

    from placerl.placement.cost.memory import memory_per_slot

    return (
        {"machine": machine} if "machine" in inspect.signature(memory_per_slot).parameters else {}
    )


def label(spec: dict) -> str:
    micro = f" micro {spec['micro']}" if spec["micro"] else ""
    return f"{spec['algo']} {spec['size']} {spec['rows']} rows{micro}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="RL steps per run")
    parser.add_argument("--cells", type=int, default=len(GRID), help="first N workloads")
    parser.add_argument("--profile", help="profile JSON (default: the stored one)")
    parser.add_argument("--terms", action="store_true", help="print each slot's terms")
    args = parser.parse_args()
    import placement as bench

    from placerl.models.factory import TinyLlamaSize
    from placerl.placement.cost.calibration import machine_for
    from placerl.placement.cost.shapes import shape_from_dir
    from placerl.profiling.runs import run_fresh

    work = Path(tempfile.mkdtemp(prefix="planner-memory-"))
    models = {
        n: bench.build_models(work / n, replace(TinyLlamaSize(), **kw)) for n, kw in SIZES.items()
    }
    machine, note = machine_for("cpu", shape_from_dir(models["6M"][0]), args.profile)
    print(note)
    print("| workload | strategy | slot | predicted MiB | measured MiB | error |")
    print("|---|---|---|---|---|---|")
    errors = []
    for i, (size, algo, strategy, rows, micro) in enumerate(GRID[: args.cells]):
        base, rm = models[size]
        spec = {
            "size": size,
            "algo": algo,
            "strategy": strategy,
            "rows": rows,
            "micro": micro,
            "steps": args.steps,
            "base": str(base),
            "rm": str(rm),
            "work": str(work / f"c{i}"),
        }
        cfg = cell_config(spec)
        measured = run_fresh(cfg.model_dump(mode="json"))  # a fresh process
        predicted = predict(cfg, machine)
        for slot, got in zip(predicted, measured["workers"], strict=True):
            real = got["peak"]
            err = slot["total"] / real - 1
            errors.append(abs(err))
            print(
                f"| {label(spec)} | {strategy} | {got['label']} | {slot['total'] / MiB:.0f} "
                f"| {real / MiB:.0f} | {err:+.0%} |",
                flush=True,
            )
            if args.terms:
                terms = ", ".join(f"{k} {v / MiB:.1f}" for k, v in slot["terms"].items())
                print(f"|   | terms | {terms} |||", flush=True)
        if strategy != "local":
            print(f"|   | (controller, not scored) | | | {measured['controller'] / MiB:.0f} | |")
    print(
        f"\nmemory: median |error| {statistics.median(errors):.0%}, max {max(errors):.0%} "
        f"over {len(errors)} cells"
    )


if __name__ == "__main__":
    main()
