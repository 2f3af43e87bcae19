"""How well the planner predicts this machine: predicted vs measured step times, side by side.

A grid of 12 workloads — two model sizes, short and long responses, two batch sizes, PPO and
GRPO — each run under local (1 slot, every core), and Flatten, Interleave (PPO: reference and
reward model to split) and Separate (``max_staleness: 1``) on 2 slots of 1 thread, with the
training code of ``benchmarks/placement.py`` (the demo's RL stage, untrained base policy,
responses to the cap). The cost model is calibrated on each model's own stored profile
(``placerl profile``, run first for a shape that has none), never on these measurements.
Each cell measures ``--steps`` steps after ``--warmup``, or more where they would take under
``--min-seconds`` (predicted), so a 30 ms step's median is not five samples of noise; and it
does so ``--rounds`` times, the workload's strategies side by side in each round, its
measured time the median of all its steps. Printed per cell: predicted and median measured
``time/step``; per workload: whether the predicted-fastest strategy is the measured fastest;
then the summary line

    median |error| X%, max Y%, pick best in K/N, within 5% of best in M/N

(targets: median ≤ 10%, max ≤ 25%, pick within 5% of the best in ≥ 90%). Memory against
peak RSS is ``planner_memory.py``'s. On a machine shared with other jobs the measured times
drift; run it niced, once, and read the summary with that in mind.

    nice -n 19 python benchmarks/planner_accuracy.py [--steps 5] [--min-seconds 3] [--rounds 2]
    nice -n 19 python benchmarks/planner_accuracy.py --only 'grpo 1.6M' --phases
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from math import ceil
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import placement as bench  # noqa: E402  (benchmarks/placement.py: configs and runner)
import ray  # noqa: E402

from placerl.config.schema import RunConfig  # noqa: E402
from placerl.models.factory import TinyLlamaSize  # noqa: E402
from placerl.models.loading import load_tokenizer  # noqa: E402
from placerl.placement.cost.calibration import machine_for  # noqa: E402
from placerl.placement.cost.phases import step_phases  # noqa: E402
from placerl.placement.cost.schedule import predict_step  # noqa: E402
from placerl.placement.cost.shapes import shape_from_dir  # noqa: E402
from placerl.placement.cost.workload import workload_from_config  # noqa: E402
from placerl.placement.from_config import local_plan, needed_roles, plan_from_config  # noqa: E402
from placerl.placement.plan.cluster import cpu_cluster, local_slot  # noqa: E402
from placerl.placement.plan.plan import Cluster  # noqa: E402

MAX_STEPS = 60
SIZES = {
    "6M": TinyLlamaSize(),  # the demo's policy
    "1.6M": replace(TinyLlamaSize(), hidden_size=128, intermediate_size=512, num_hidden_layers=4),
}
# (model, algo, new tokens, rows per step): 2 sizes x 2 algos x short/long, plus 4 at the
# other batch size
GRID = [
    (size, algo, tokens, 32) for size in SIZES for algo in ("ppo", "grpo") for tokens in (8, 32)
] + [("6M", "ppo", 8, 8), ("6M", "grpo", 32, 8), ("1.6M", "ppo", 32, 8), ("1.6M", "grpo", 8, 8)]


def prompt_len(cfg: RunConfig, base: Path) -> float:
    """Mean tokens of the first prompts the run will see (the builtin task's)."""
    from placerl.stages.sources import prompt_set

    small = cfg.model_copy(update={"data": cfg.data.model_copy(update={"builtin_size": 64})})
    ids = prompt_set(small, load_tokenizer(base), cfg.data.train, "train").token_ids
    return sum(map(len, ids)) / len(ids)


def predict(cfg: RunConfig, base: Path, machine):
    roles = needed_roles(cfg)
    if cfg.placement.strategy == "local":
        plan = local_plan(roles, Cluster((local_slot("cpu"),)), cfg.placement.max_staleness)
    else:
        plan = plan_from_config(cfg, cluster=cpu_cluster(2, 1, cores=2), model_params={})
    w = workload_from_config(cfg, roles).with_(prompt_len=prompt_len(cfg, base))
    return predict_step(plan, w, step_phases(plan, w, machine))


def machine_of(base: Path, reprofile: bool):
    """The stored profile of this model's exact shape, measured first when there is none
    (``placerl profile`` on it): the calibration, never these runs' own timings."""
    from placerl.placement.cost.profiles import find_profile
    from placerl.profiling.profile import run_profile, store_profile

    shape = shape_from_dir(base)
    found = find_profile("cpu", shape)
    if reprofile or not (found and found[2]):
        store_profile(run_profile(shape, log=lambda m: None), "cpu", shape)
    machine, note = machine_for("cpu", shape, None)
    print(note)
    return machine


def ray_up(wanted: bool) -> None:
    """Ray for the worker strategies only: its idle daemons (GCS, raylet, dashboard) wake
    every few milliseconds, which stalls a 2-thread in-process run at every OpenMP barrier
    (by 10-20% here) — a cost a user's ``local`` run, with no Ray, never pays."""
    if wanted and not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        time.sleep(8)  # its agents' start-up burns a core for seconds: not a step's cost
    elif not wanted and ray.is_initialized():
        ray.shutdown()


def run_workload(args, spec, models, work: Path, machines) -> list[dict]:
    size, algo, tokens, rows = spec
    base, rm = models[size]
    machine = machines[size]
    strategies = ["local", "flatten", "separate"] + (["interleave"] if algo == "ppo" else [])
    runs = {}
    for strategy in strategies:
        ns = argparse.Namespace(warmup=args.warmup, steps=1, new_tokens=tokens, rows=rows)
        predicted = predict(
            bench.rl_config(ns, algo, strategy, base, rm, work / "unused"), base, machine
        )
        # a median of at least ``--min-seconds`` of steps: 5 steps of 30 ms are mostly noise
        ns.steps = min(MAX_STEPS, max(args.steps, ceil(args.min_seconds / predicted.step_s)))
        runs[strategy] = (ns, predicted, bench.Result(algo, strategy, rows))
    started = time.perf_counter()
    for round_ in range(args.rounds):  # side by side, round after round: drift hits all alike
        for strategy, (ns, _, result) in runs.items():
            ray_up(strategy != "local")
            bench.run_one(ns, result, base, rm, work, round_)
    cells = []
    for strategy, (ns, predicted, result) in runs.items():
        cell = {
            "workload": f"{algo} {size} {rows}x{tokens}",
            "strategy": strategy,
            "predicted": predicted.step_s,
            "measured": result.step,
        }
        if args.phases:
            measured = {k: statistics.median(v) for k, v in result.phases.items()}
            names = sorted(set(measured) | set(predicted.phases))
            print(
                "    "
                + ", ".join(
                    f"{n} {predicted.phases.get(n, 0):.3f}/{measured.get(n, 0):.3f}" for n in names
                )
                + f", other -/{result.step - sum(measured.values()):.3f}"
            )
        cell["error"] = cell["predicted"] / cell["measured"] - 1
        cells.append(cell)
        rounds = " ".join(f"{r:.3f}" for r in result.round_steps)
        print(
            f"| {cell['workload']} | {strategy} | {cell['predicted']:.3f} | "
            f"{cell['measured']:.3f} | {cell['error']:+.0%} |  "
            f"({ns.steps} steps x {args.rounds}; rounds {rounds})",
            flush=True,
        )
    print(f"    ({time.perf_counter() - started:.0f} s)")
    return cells


def summary(by_workload: list[list[dict]]) -> str:
    errors = [abs(c["error"]) for cells in by_workload for c in cells]
    best = within = 0
    for cells in by_workload:
        measured_best = min(cells, key=lambda c: c["measured"])
        pick = min(cells, key=lambda c: c["predicted"])
        best += pick is measured_best
        within += pick["measured"] <= 1.05 * measured_best["measured"]
    n = len(by_workload)
    return (
        f"median |error| {statistics.median(errors):.0%}, max {max(errors):.0%}, "
        f"pick best in {best}/{n}, within 5% of best in {within}/{n}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs of each cell, strategies side by side"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help="measure more steps than --steps where they take less than this in all "
        f"(predicted; at most {MAX_STEPS})",
    )
    parser.add_argument("--workloads", type=int, default=len(GRID))
    parser.add_argument(
        "--profile",
        help="one profile JSON for every model (default: each "
        "model's own stored profile, measured first if missing)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="run only the workloads whose name contains this, e.g. 'grpo 1.6M'",
    )
    parser.add_argument("--reprofile", action="store_true", help="measure the profiles again")
    parser.add_argument(
        "--phases", action="store_true", help="print each cell's phases: predicted/measured s"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="planner-accuracy-"))
    models = {name: bench.build_models(work / name, size) for name, size in SIZES.items()}
    if args.profile:
        machine, note = machine_for("cpu", shape_from_dir(models["6M"][0]), args.profile)
        print(note)
        machines = dict.fromkeys(models, machine)
    else:
        machines = {name: machine_of(base, args.reprofile) for name, (base, _) in models.items()}
    print("| workload | strategy | predicted s | measured s | error |\n|---|---|---|---|---|")
    by_workload = []
    try:
        for spec in GRID[: args.workloads]:
            if args.only not in f"{spec[1]} {spec[0]} {spec[3]}x{spec[2]}":
                continue
            by_workload.append(run_workload(args, spec, models, work, machines))
    finally:
        ray.shutdown()
    print("\n| workload | predicted pick | measured best |\n|---|---|---|")
    for cells in by_workload:
        pick = min(cells, key=lambda c: c["predicted"])["strategy"]
        best = min(cells, key=lambda c: c["measured"])["strategy"]
        print(f"| {cells[0]['workload']} | {pick} | {best} |")
    print("\n" + summary(by_workload))


if __name__ == "__main__":
    main()
