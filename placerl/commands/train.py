"""``placerl train CONFIG [key=value ...] [--resume] [--run-dir DIR]``: one stage."""

from __future__ import annotations

import argparse
import sys

from placerl.commands.args import add_help_config

DESCRIPTION = (
    "Train one stage (sft, rm, ppo, grpo, rloo, dpo, online_dpo, rso, brain) from a YAML "
    "config plus dotted key=value overrides, flags and overrides in any order. Outputs go to "
    "run_dir: metrics.jsonl, samples.jsonl, tb/, checkpoints/ and the trained model "
    "(placerl plot RUN_DIR draws the plots)."
)


def register(sub) -> argparse.ArgumentParser:
    train = sub.add_parser(
        "train", help="run one stage from a YAML config", description=DESCRIPTION
    )
    train.add_argument("config", help="YAML config file")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-5")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--run-dir", help="shorthand for run_dir=...")
    train.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue even if the config changes the training",
    )
    add_help_config(train)
    train.set_defaults(fn=run)
    return train


def run(args: argparse.Namespace) -> int:
    from placerl.config import load_config
    from placerl.config.schema import RunConfig
    from placerl.profiling.profile import profile_here
    from placerl.runtime.faults import WorkerFailure
    from placerl.trainer import train

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    cfg = load_config(args.config, overrides, RunConfig)
    try:
        metrics = train(
            cfg,
            resume=args.resume,
            allow_config_change=args.allow_config_change,
            profiler=profile_here,  # strategy auto: measure the machine first where needed
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: {resume_command(args)}", file=sys.stderr)
        return 130
    except WorkerFailure as err:  # checkpoints are atomic: the last one is intact
        print(f"placerl: error: {err.message}", file=sys.stderr)
        print(f"resume with: {resume_command(args)}", file=sys.stderr)
        return err.exit_code
    if metrics:
        print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    print(f"outputs in {cfg.run_dir}")
    return 0


def resume_command(args: argparse.Namespace) -> str:
    parts = ["placerl", "train", str(args.config), *args.overrides]
    if args.run_dir:
        parts += ["--run-dir", args.run_dir]
    return " ".join([*parts, "--resume"])
