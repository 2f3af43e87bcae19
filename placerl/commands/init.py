"""``placerl init STAGE [DIR]``: a commented starter config and its data (``placerl/starter``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

STAGES = ("sft", "rm", "dpo", "ppo", "grpo", "rloo", "online_dpo", "rso", "brain")


def register(sub) -> argparse.ArgumentParser:
    init = sub.add_parser(
        "init",
        help="write a commented starter config and example data for a stage",
        description="Write DIR/STAGE.yaml (every key of the sections the stage reads, with "
        "its description), the data files it names under DIR/data/ (chat format, from the "
        "built-in digit-reversal task) and, for a rule reward, DIR/rewards.py. Paths are "
        "relative to DIR: run placerl train STAGE.yaml from there.",
    )
    init.add_argument("stage", choices=STAGES, metavar="STAGE", help=", ".join(STAGES))
    init.add_argument("dir", nargs="?", default=".", help="where to write (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(fn=run)
    return init


def run(args: argparse.Namespace) -> int:
    from placerl.starter import write_starter

    directory = Path(args.dir)
    for path in write_starter(args.stage, directory, force=args.force):
        print(f"wrote {path}")
    here = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory} && "
    for stage, run_path in missing_runs(args.stage, directory):
        print(
            f"first: {here}placerl init {stage} && placerl train {stage}.yaml  "
            f"({args.stage}.yaml starts from {run_path}, which does not exist yet)"
        )
    print(f"next: {here}placerl train {args.stage}.yaml", end="")
    print(f"{os.linesep}then: placerl generate runs/{args.stage} 'rev 12345='")
    return 0


def missing_runs(stage: str, directory: Path) -> list[tuple[str, str]]:
    """The earlier stages whose outputs ``stage``'s starter config starts from and that ``directory``
    lacks, in the order to run them: (stage, the path its run writes)."""
    from placerl.starter.config import AFTER_SFT, SETTINGS

    settings = SETTINGS[stage]
    wanted = [("sft", AFTER_SFT)] if settings.get("model.path") == AFTER_SFT else []
    reward_model = settings.get("reward.model")
    if reward_model:  # the reward model is trained from the SFT policy
        wanted = [("sft", AFTER_SFT), ("rm", reward_model)]
    return [(s, path) for s, path in wanted if not (directory / path).exists()]
