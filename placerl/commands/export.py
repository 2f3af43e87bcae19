"""``placerl export RUN --merge``: a plain model directory for every LoRA adapter of a run.

A LoRA run exports adapters (``policy/``, ``critic/``, ``reward_model/``), and the merged
models only with ``model.lora.merge_on_export``. This writes them afterwards:
``<name>_merged/`` next to each adapter (or ``--out`` for a single adapter directory), loaded
the way every stage loads an adapter (its base, which may itself be an adapter, with the
adapter merged: ``models/lora.py::load_merged``) and saved as ``from_pretrained`` reads it,
tokenizer included, atomically (``checkpoint.export_model``). Weights are saved in fp32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from placerl.errors import UserError

DESCRIPTION = (
    "Write <name>_merged/ (a plain model directory that transformers loads without peft) next "
    "to every LoRA adapter directory of a run (policy/, critic/, reward_model/), or for one "
    "adapter directory given directly."
)
ROLES = ("policy", "critic", "reward_model")


def register(sub) -> argparse.ArgumentParser:
    export = sub.add_parser("export", help="merge a run's LoRA adapters into plain models")
    export.description = DESCRIPTION
    export.add_argument("run", metavar="RUN", help="run directory, or one adapter directory")
    export.add_argument(
        "--merge", action="store_true", help="write <name>_merged/ for each adapter (required)"
    )
    export.add_argument("--out", help="where to write, for a single adapter directory")
    export.set_defaults(fn=run)
    return export


def adapters_of(path: Path) -> list[Path]:
    """The adapter directories ``path`` names: itself, or the run's role directories."""
    from placerl.models.lora import adapter_config
    from placerl.models.paths import require_dir

    path = require_dir(path, "run or adapter")
    if adapter_config(path) is not None:
        return [path]
    found = [path / role for role in ROLES if adapter_config(path / role) is not None]
    if found:
        return found
    full = [role for role in ROLES if (path / role / "config.json").exists()]
    if full:
        raise UserError(
            f"nothing to merge: {', '.join(f'{r}/' for r in full)} already a full model "
            "(the run did not use model.lora)",
            where=str(path),
        )
    raise UserError(
        "no LoRA adapter here: expected an adapter directory (adapter_config.json) or a run "
        "directory with policy/, critic/ or reward_model/ adapters",
        where=str(path),
    )


def merged(adapter: Path):
    """The adapter merged into its base, as the model class its task names."""
    from placerl.models.loading import load_policy, load_reward_model, load_value_model
    from placerl.models.lora import adapter_config

    task = adapter_config(adapter).get("task_type")
    if task == "SEQ_CLS":
        return load_reward_model(adapter, trained=True)
    if task == "TOKEN_CLS":
        return load_value_model(adapter)
    return load_policy(adapter)


def run(args: argparse.Namespace) -> int:
    from placerl.checkpoint import export_model
    from placerl.models.loading import load_tokenizer

    if not args.merge:
        raise UserError(
            "say what to export: --merge writes a plain model next to each LoRA adapter",
            where="export",
        )
    adapters = adapters_of(Path(args.run))
    if args.out and len(adapters) > 1:
        raise UserError("--out takes one adapter directory, not a run with several", "--out")
    for adapter in adapters:
        out = Path(args.out) if args.out else adapter.with_name(f"{adapter.name}_merged")
        export_model(merged(adapter), load_tokenizer(adapter), out)
        print(f"{adapter} → {out}")
    return 0
