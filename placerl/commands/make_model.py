"""``placerl make-model DIR``: the tiny tokenizer + Llama (random weights) into a directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from placerl.errors import UserError


def register(sub) -> argparse.ArgumentParser:
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
    make.set_defaults(fn=run)
    return make


def _check(args: argparse.Namespace) -> None:
    from placerl.models.factory import TinyLlamaSize

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


def run(args: argparse.Namespace) -> int:
    from placerl.models.factory import TinyLlamaSize, make_model_dir
    from placerl.stages.sources import builtin_corpus

    _check(args)
    size = TinyLlamaSize(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        intermediate_size=args.intermediate or 4 * args.hidden,
    )
    path = make_model_dir(Path(args.out), builtin_corpus(), size, seed=args.seed)
    print(f"tiny Llama and tokenizer saved to {path}")
    return 0
