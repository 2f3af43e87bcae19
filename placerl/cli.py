"""``placerl demo | train | plot | make-model | plan``.

User mistakes surface as ``UserError`` and are printed as one line with exit code 2; anything
else is a bug in placerl and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from placerl.errors import UserError  # noqa: E402


def _quiet_libraries() -> None:
    """Silence download/loading progress bars of transformers and datasets: ours is enough."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*TypedStorage.*")


def cmd_train(args: argparse.Namespace) -> int:
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


def cmd_plan(args: argparse.Namespace) -> int:
    from placerl.placement.command import plan_command
    from placerl.profiling.profile import profile_here

    return plan_command(args, profiler=profile_here)


def cmd_profile(args: argparse.Namespace) -> int:
    from placerl.profiling.command import profile_command

    return profile_command(args)


def cmd_plot(args: argparse.Namespace) -> int:
    from placerl.plotting import plot_run

    paths = plot_run(Path(args.run_dir))
    for path in paths:
        print(path)
    return 0


def cmd_make_model(args: argparse.Namespace) -> int:
    from placerl.models.factory import TinyLlamaSize, make_model_dir
    from placerl.stages.sources import builtin_corpus

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError("is an existing file, not a directory; choose another path", str(out))
    heads = TinyLlamaSize.num_attention_heads
    for flag, value in (("--hidden", args.hidden), ("--layers", args.layers)):
        if value < 1:
            raise UserError(f"{flag} {value}: expected a positive integer", where=flag)
    if args.hidden % heads:
        raise UserError(f"--hidden {args.hidden}: expected a multiple of {heads}", "--hidden")
    if args.intermediate is not None and args.intermediate < 1:
        raise UserError(f"--intermediate {args.intermediate}: expected >= 1", "--intermediate")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed {args.seed}: expected 0 to 2**32 - 1", where="--seed")
    size = TinyLlamaSize(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        intermediate_size=args.intermediate or 4 * args.hidden,
    )
    path = make_model_dir(out, builtin_corpus(), size, seed=args.seed)
    print(f"tiny Llama and tokenizer saved to {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from placerl.demo import run_demo

    run_demo(Path(args.out), args.algo, quick=args.quick)
    return 0


class HelpConfigAction(argparse.Action):
    """``--help-config [SECTION]``: print the config reference and exit, like ``--help``
    (so ``placerl train --help-config`` needs no config file)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="?", metavar="SECTION", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from placerl.config.describe import render, section_names
        from placerl.config.schema import RunConfig

        if values and values not in section_names(RunConfig):
            parser.error(
                f"--help-config: no section {values!r}; sections: "
                + ", ".join(section_names(RunConfig))
            )
        sys.stdout.write(render(RunConfig, values))
        parser.exit()


DESCRIPTION = """RLHF and preference optimization (SFT, reward models, PPO, GRPO, RLOO, DPO,
online DPO, RSO, BRAIn) with placement of the models on devices as a choice of its own."""

EPILOG = """examples:
  placerl demo --out runs/demo                  SFT → reward model → PPO on digit reversal
  placerl train examples/sft.yaml optim.lr=1e-4 one stage from a YAML config
  placerl train --help-config [SECTION]         every config field: type, default, meaning
  placerl plan examples/ppo.yaml                where each role would run
  placerl plot runs/demo                        PNG plots of a run's metrics.jsonl"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="placerl",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--help-config", action=HelpConfigAction, help="print every config field and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="SFT → reward model → RL on the built-in digit-reversal task",
        description="InstructGPT's pipeline in miniature on the built-in digit-reversal task (reverse a "
        "string of digits): a tiny base model, SFT on noisy demonstrations, a reward model "
        "(ppo only), then RL; prints held-out exact match before and after. A finished stage "
        "is reused and an interrupted one resumes when the demo is run again.",
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
    demo.set_defaults(fn=cmd_demo)

    train = sub.add_parser(
        "train",
        help="run one stage from a YAML config",
        description="Train one stage (sft, rm, ppo, grpo, rloo, dpo, online_dpo, rso, brain) "
        "from a YAML config plus dotted key=value overrides. Outputs go to run_dir: "
        "metrics.jsonl, samples.jsonl, tb/, checkpoints/ and the trained model "
        "(placerl plot RUN_DIR draws the plots).",
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
    train.add_argument(
        "--help-config", action=HelpConfigAction, help="print every config field and exit"
    )
    train.set_defaults(fn=cmd_train)

    from placerl.placement.command import add_plan_arguments
    from placerl.profiling.command import add_profile_arguments

    plan = sub.add_parser("plan", help="print where each role of a config would run")
    add_plan_arguments(plan)
    plan.set_defaults(fn=cmd_plan)

    profile = sub.add_parser("profile", help="measure what the planner's cost model needs")
    add_profile_arguments(profile)
    profile.set_defaults(fn=cmd_profile)

    plot = sub.add_parser("plot", help="write PNG plots of a run directory")
    plot.add_argument("run_dir", help="a run directory, or one holding a stage per folder")
    plot.set_defaults(fn=cmd_plot)

    make = sub.add_parser(
        "make-model", help="build the tiny tokenizer + Llama into a directory (random weights)"
    )
    make.add_argument("out", help="directory to write the model and tokenizer into")
    make.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    make.add_argument("--layers", type=int, default=6, help="decoder layers (default 6)")
    make.add_argument(
        "--intermediate", type=int, default=None, help="MLP size (default 4 × hidden)"
    )
    make.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    make.set_defaults(fn=cmd_make_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.fn(args)
    except UserError as err:
        where = f"{err.where}: " if err.where else ""
        print(f"placerl: error: {where}{err.message}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
