"""``placerl COMMAND``: the parser, and the one place that turns a ``UserError`` into a line.

Each command lives in ``placerl/commands/`` (its arguments and what it does). User mistakes
surface as ``UserError`` and are printed as one line with exit code 2; anything else is a bug
in placerl and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from placerl.commands import (  # noqa: E402
    demo,
    export,
    generate,
    init,
    make_model,
    plan,
    plot,
    train,
)
from placerl.commands.args import add_help_config, parse_args  # noqa: E402
from placerl.errors import UserError  # noqa: E402

DESCRIPTION = """RLHF and preference optimization (SFT, reward models, PPO, GRPO, RLOO, DPO,
online DPO, RSO, BRAIn) with placement of the models on devices as a choice of its own."""

EPILOG = """examples:
  placerl demo --out runs/demo                  SFT → reward model → PPO on digit reversal
  placerl train examples/sft.yaml optim.lr=1e-4 one stage from a YAML config
  placerl train --help-config [SECTION]         every config field: type, default, meaning
  placerl plan examples/ppo.yaml                where each role would run
  placerl plot runs/demo                        PNG plots of a run's metrics.jsonl

flags and key=value overrides may come in any order after the command."""

COMMANDS = (demo, init, train, plan, plot, generate, export, make_model)


def _quiet_libraries() -> None:
    """Silence download/loading progress bars of transformers and datasets: ours is enough."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*TypedStorage.*")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="placerl",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_help_config(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as the command's arguments (flags and overrides in any order)."""
    return parse_args(build_parser(), argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    _quiet_libraries()
    try:
        return args.fn(args)
    except UserError as err:
        where = f"{err.where}: " if err.where else ""
        print(f"placerl: error: {where}{err.message}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
