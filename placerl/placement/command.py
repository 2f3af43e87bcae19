"""``placerl plan``: its arguments, the configured Plan, and ``--auto``'s ranking.

``cli.py`` only registers these (``add_plan_arguments`` / ``plan_command``), so the planner's
options live with the planner (``placerl profile``'s with the profiler: ``profiling/command.py``).
Imports stay inside the functions: building the CLI parser must not import torch or Ray.

On this machine ``--auto`` ranks with the cost model's constants from the stored profile
(``placerl profile``), else built-in CPU defaults, and the one-process ``local`` plan competes
too. With ``--cluster`` they come from the hardware specs (``placement/cost/hardware``): a plan
on paper, nothing is measured or started.
"""

from __future__ import annotations

import argparse
import sys


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. placement.num_workers=4"
    )
    parser.add_argument("--json", action="store_true", help="print the Plan (or search) as JSON")
    parser.add_argument(
        "--auto",
        action="store_true",
        help="search strategies × group splits × dp × sharding × micro-batch with the cost "
        "model and print the best candidates and why the pick wins",
    )
    parser.add_argument(
        "--cluster",
        help="plan for hardware that is not here, e.g. 16xH100, 8xH200, 64xA100 "
        "(specs from placerl/placement/cost/hardware; no profiling)",
    )
    parser.add_argument(
        "--model-size",
        help="--auto: plan for a named Llama shape (7B, 13B, 34B, 70B) instead of model.path's",
    )
    parser.add_argument("--top", type=int, default=8, help="--auto: candidates shown (default 8)")
    parser.add_argument(
        "--profile", help="--auto: profile JSON to calibrate with (default: the stored one)"
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="--auto: where no stored profile is usable, rank with the built-in defaults "
        "instead of profiling this machine first (at most a minute, as strategy auto does)",
    )


def plan_command(args: argparse.Namespace, profiler=None) -> int:
    """Print the configured Plan, or with ``--auto`` the search's ranking and pick
    (``profiler``: measures this machine first where no stored profile is usable)."""
    import json

    from placerl.config import load_config
    from placerl.config.schema import RunConfig
    from placerl.placement.from_config import plan_from_config
    from placerl.placement.plan.config import capacity_check, model_params_for
    from placerl.placement.plan.render import print_plan

    cfg = load_config(args.config, list(args.overrides), RunConfig)
    if args.auto or args.cluster:
        return auto_plan_command(cfg, args, None if args.no_profile else profiler)
    plan = plan_from_config(cfg)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print_plan(plan, model_params=model_params_for(cfg))
    problem = capacity_check(cfg, plan)
    if problem:
        print(f"placerl: error: placement: {problem}", file=sys.stderr)
        return 2
    return 0


def auto_plan_command(cfg, args: argparse.Namespace, profiler=None) -> int:
    """``placerl plan CONFIG --auto [--json] [--cluster 16xH100]``: search and explain."""
    import json

    from rich.console import Console

    from placerl.placement.auto.plan import run_search
    from placerl.placement.search import explain
    from placerl.types import Role

    result, w = run_search(cfg, args.cluster, args.profile, args.model_size, profiler)
    if args.json:
        print(json.dumps(explain.search_json(result, args.top), indent=2))
        return 0 if result.pick else 2
    console = Console(width=None if Console().is_terminal else 140)
    shape = w.shapes[Role.ACTOR]
    if w.offline:
        console.print(offline_workload_line(w), highlight=False)
    else:
        console.print(
            f"workload: {w.stage}, {w.prompts} prompts × {w.samples} samples, prompt "
            f"~{w.prompt_len:.0f} + response {w.response_len:.0f} tokens, policy {shape.name} "
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
    if w.offline:
        for line in offline_pick_lines(result, w, cfg):
            console.print(line, highlight=False, markup=False)
    return 0


def offline_workload_line(w) -> str:
    """sft, rm, dpo: the examples of a step, their lengths and the trained model."""
    from placerl.types import Role

    shape = w.shapes[Role.ACTOR]
    what = {"sft": "examples", "rm": "pairs (2 rows each)", "dpo": "pairs (2 rows each)"}
    examples = w.prompts // 2 if w.stage == "rm" else w.prompts
    reference = ""
    if Role.REFERENCE in w.shapes:
        reference = f", reference forward on {w.reference_share:.0%} of the steps"
    return (
        f"workload: {w.stage}, {examples} {what[w.stage]} a step, prompt ~{w.prompt_len:.0f} + "
        f"response ~{w.response_len:.0f} tokens, trained {shape.name} "
        f"({shape.params / 1e6:.1f}M params), {w.precision}{reference}"
    )


def offline_pick_lines(result, w, cfg) -> list[str]:
    """The pick of an offline stage in its settings' words: data-parallel size, sharding,
    micro-batch, gradient checkpointing, predicted memory and step (and why each setting)."""
    from placerl.placement.auto.settings import explicit, setting_lines
    from placerl.types import Role

    pick = result.pick
    c, placed = pick.candidate, pick.candidate.plan.roles[Role.ACTOR]
    mb = f"{c.micro_batch} rows" if c.micro_batch else "the whole share"
    sharding = placed.sharding.value
    if placed.shard_size:
        sharding += f" (shard groups of {placed.shard_size})"
    where = "this process" if c.plan.strategy == "local" else f"{placed.dp_size} worker(s)"
    return [
        f"plan: {c.plan.strategy} on {where}: data-parallel size {placed.dp_size}, sharding "
        f"{sharding}, micro-batch {mb}, gradient checkpointing "
        f"{'on' if c.checkpointing else 'off'}; predicted {pick.step_s:.3g} s a step, "
        f"{pick.memory_gb:.1f} GB per device",
        *setting_lines(pick, w, result.machine, explicit(cfg)),
    ]
