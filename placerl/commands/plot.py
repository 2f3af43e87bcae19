"""``placerl plot RUN_DIR``: PNG plots of a run's metrics.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> argparse.ArgumentParser:
    plot = sub.add_parser("plot", help="write PNG plots of a run directory")
    plot.add_argument("run_dir", help="a run directory, or one holding a stage per folder")
    plot.set_defaults(fn=run)
    return plot


def run(args: argparse.Namespace) -> int:
    from placerl.plotting import plot_run

    for path in plot_run(Path(args.run_dir)):
        print(path)
    return 0
