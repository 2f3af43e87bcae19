"""``placerl demo``: InstructGPT's pipeline in miniature on the built-in reversal task."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "InstructGPT's pipeline in miniature on the built-in digit-reversal task (reverse a "
    "string of digits): a tiny base model, SFT on noisy demonstrations, a reward model "
    "(ppo only), then RL; prints held-out exact match before and after. A finished stage "
    "is reused and an interrupted one resumes when the demo is run again. --task tools: "
    "multi-digit arithmetic with a calculator tool (SFT on tool-use demonstrations, then RL "
    "on multi-turn episodes), against SFT straight to the answer without the tool."
)


def register(sub) -> argparse.ArgumentParser:
    demo = sub.add_parser(
        "demo",
        help="SFT → reward model → RL on the built-in digit-reversal task",
        description=DESCRIPTION,
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    demo.add_argument(
        "--task",
        choices=["reversal", "tools"],
        default="reversal",
        help="reversal (digit reversal, default) or tools (arithmetic with a calculator tool)",
    )
    demo.add_argument(
        "--algo",
        choices=["ppo", "grpo", "rloo"],
        default=None,
        help="the RL stage: ppo (with the reward model and a critic) or grpo/rloo (with the "
        "exact-match rule reward); default ppo, grpo with --task tools (grpo or rloo only)",
    )
    demo.add_argument("--quick", action="store_true", help="a few steps per stage (smoke test)")
    demo.set_defaults(fn=run)
    return demo


def run(args: argparse.Namespace) -> int:
    if args.task == "tools":
        from placerl.demo_tools import run_tools_demo
        from placerl.errors import UserError

        if args.algo == "ppo":
            raise UserError("--task tools runs grpo or rloo", where="--algo")
        run_tools_demo(Path(args.out), args.algo or "grpo", quick=args.quick)
        return 0
    from placerl.demo import run_demo

    run_demo(Path(args.out), args.algo or "ppo", quick=args.quick)
    return 0
