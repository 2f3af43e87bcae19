"""``placerl plan`` and ``placerl profile``: registered here, defined with the planner
(``placerl/placement/command.py``) and the profiler (``placerl/profiling/command.py``)."""

from __future__ import annotations

import argparse


def register(sub) -> list[argparse.ArgumentParser]:
    from placerl.placement.command import add_plan_arguments
    from placerl.profiling.command import add_profile_arguments

    plan = sub.add_parser("plan", help="print where each role of a config would run")
    add_plan_arguments(plan)
    plan.set_defaults(fn=run_plan)
    profile = sub.add_parser("profile", help="measure what the planner's cost model needs")
    add_profile_arguments(profile)
    profile.set_defaults(fn=run_profile)
    return [plan, profile]


def run_plan(args: argparse.Namespace) -> int:
    from placerl.placement.command import plan_command
    from placerl.profiling.profile import profile_here

    return plan_command(args, profiler=profile_here)  # --auto: measure first where needed


def run_profile(args: argparse.Namespace) -> int:
    from placerl.profiling.command import profile_command

    return profile_command(args)
