"""``placerl profile``: its arguments; the measuring is ``profile.py``'s.

``cli.py`` only registers these. Imports stay inside the functions: building the CLI parser
must not import torch or Ray.
"""

from __future__ import annotations

import argparse


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
    from placerl.profiling.profile import profile_command as run

    return run(args)
