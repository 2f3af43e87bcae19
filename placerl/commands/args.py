"""Command-line parsing shared by every subcommand: flags and ``key=value`` overrides in any
order, and ``--help-config [SECTION]``.

argparse matches positionals in runs between flags, so ``placerl train grpo.yaml --resume
trainer.steps=10`` would leave ``trainer.steps=10`` unrecognised. Here every word that is not a
flag and not taken by a positional is an override of the command (kept in the order given;
later wins), as Hydra, TRL's CLI and veRL read them; a command without overrides refuses it.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with leftover ``key=value`` words appended to the
    command's ``overrides``; anything else left over is a usage error of that command."""
    args, extras = parser.parse_known_args(argv)
    command = _subcommands(parser).get(getattr(args, "command", None) or "", parser)
    flags = [word for word in extras if word.startswith("-") and word != "-"]
    if flags or (extras and "overrides" not in vars(args)):
        command.error("unrecognized arguments: " + " ".join(flags or extras))
    if extras:
        args.overrides = [*args.overrides, *extras]
    return args


class HelpConfigAction(argparse.Action):
    """``--help-config [SECTION]``: print the config reference and exit, like ``--help``
    (so ``placerl train --help-config`` needs no config file). SECTION is any section the
    listing shows, nested ones too (``model.lora``, ``rollout.vllm``)."""

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


def add_help_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--help-config", action=HelpConfigAction, help="print every config field and exit"
    )


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subparsers of ``parser`` by command name (for the right usage line in errors)."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps no public handle on them
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}
