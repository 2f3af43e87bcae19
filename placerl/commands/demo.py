"""``placerl demo``: InstructGPT's pipeline in miniature on the built-in reversal task."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "InstructGPT's pipeline in miniature on the built-in digit-reversal task (reverse a "
    "string of digits): a tiny base model, SFT on noisy demonstrations, a reward model "
    "(ppo only), then RL; prints held-out exact match before and after. A finished stage "
    "is reused and an interrupted one resumes when the demo is run again."
)


def register(sub) -> argparse.ArgumentParser:
    demo = sub.add_parser(
        "demo",
        help="SFT → reward model → RL on the built-in digit-reversal task",
        description=DESCRIPTION,
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    demo.add_argument(
        "--algo",
        choices=["ppo", "grpo", "rloo"],
        default="ppo",
        help="the RL stage: ppo (with the reward model and a critic) or grpo/rloo (with the "
        "exact-match rule reward); default ppo",
    )
    demo.add_argument("--quick", action="store_true", help="a few steps per stage (smoke test)")
    demo.set_defaults(fn=run)
    return demo


def run(args: argparse.Namespace) -> int:
    from placerl.demo import run_demo

    run_demo(Path(args.out), args.algo, quick=args.quick)
    return 0
