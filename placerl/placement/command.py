"""``placerl plan`` and ``placerl profile``: the argument lists and what the commands do.

``cli.py`` only registers these (``add_plan_arguments`` / ``plan_command``), so the planner's
options live with the planner. Imports stay inside the functions: building the CLI parser must
not import torch or Ray.
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
        "(specs from placerl/placement/hardware; no profiling)",
    )
    parser.add_argument(
        "--model-size",
        help="--auto: plan for a named Llama shape (7B, 13B, 34B, 70B) instead of model.path's",
    )
    parser.add_argument("--top", type=int, default=8, help="--auto: candidates shown (default 8)")
    parser.add_argument(
        "--profile", help="--auto: profile JSON to calibrate with (default: the stored one)"
    )


def plan_command(args: argparse.Namespace) -> int:
    """Print the configured Plan, or with ``--auto`` the search's ranking and pick."""
    import json

    from placerl.config import load_config
    from placerl.config.schema import RunConfig
    from placerl.placement.from_config import capacity_check, model_params_for, plan_from_config
    from placerl.placement.render import print_plan

    cfg = load_config(args.config, list(args.overrides), RunConfig)
    if args.auto or args.cluster:
        from placerl.placement.auto_command import auto_plan_command

        return auto_plan_command(cfg, args)
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


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config whose model is profiled")
    parser.add_argument("overrides", nargs="*", help="dotted overrides")
    parser.add_argument("--out", help="where to write the profile JSON (default: the store)")
    parser.add_argument("--force", action="store_true", help="measure even if a profile exists")
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu", "auto"),
        default="cpu",
        help="profile the CPU cores (default), GPU 0 (NCCL between GPUs 0 and 1 when two are "
        "visible), or the GPU when torch sees one",
    )


def profile_command(args: argparse.Namespace) -> int:
    from placerl.placement.profile import profile_command as run

    return run(args)
