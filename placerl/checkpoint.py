"""Atomic checkpoints and exact resume.

A checkpoint is a directory ``checkpoints/step_000123/`` holding one Hugging Face model
directory per trained model (safetensors; ``from_pretrained`` loads it), the tokenizer, and the
trainer state with everything else a bitwise-exact resume needs: optimizer and scheduler
states, random-generator states, the data position, controller state (e.g. the KL
coefficient). The state is data only (``state_io``: safetensors + JSON), never a pickle, so
resuming a run directory someone handed you cannot run code.

Writes go to ``.tmp-step_N-PID`` and are renamed into place; pruning renames a checkpoint out
of the ``step_*`` namespace before deleting it (``atomic_dirs``). A process killed at any
instant leaves the previous checkpoints and at most one new complete one — never a partial
directory under a ``step_*`` name. Weights that are not finite are never written
(``numerics``). ``read_checkpoint`` reads everything of a checkpoint before anything is
applied, so the trainer can skip a damaged one and fall back to an older one.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from placerl import atomic_dirs
from placerl.errors import UserError
from placerl.models.factory import save_tokenizer
from placerl.models.lora import is_lora, load_lora, lora_settings, save_merged, save_model
from placerl.models.lora_export import base_is_adapter, base_named, save_base
from placerl.numerics import require_finite_weights
from placerl.state_io import STATE_JSON, StateError, load_state_files, save_state

_STEP_DIR = re.compile(r"^step_(\d{6,})$")
LEGACY_STATE_FILE = "trainer_state.pt"  # pickles of placerl before data-only state: refused


class CheckpointUnreadable(Exception):
    """A checkpoint that cannot be resumed from; the message says which file and why."""


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Checkpoints under ``root``, oldest first (temporary directories are ignored)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save_checkpoint(
    root: Path, step: int, models: dict, tokenizer, state: dict, keep: int | None = None
) -> Path:
    """Write a checkpoint for ``step`` atomically; prune to the ``keep`` most recent."""
    require_finite_weights(models, step, "checkpoint")
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = atomic_dirs.temp_name(final, "tmp")
    atomic_dirs.remove(tmp)
    tmp.mkdir()
    for name, model in models.items():
        save_model(model, tmp / name)
        save_tokenizer(tokenizer, tmp / name)
    save_state(state | {"step": step, "rng": capture_rng()}, tmp)
    atomic_dirs.fsync_tree(tmp)
    atomic_dirs.replace(tmp, final)  # a re-run of the same step replaces it
    if keep is not None:
        prune_checkpoints(root, keep, up_to=step)
    return final


def prune_checkpoints(root: Path, keep: int, up_to: int | None = None) -> None:
    """Delete all but the ``keep`` newest checkpoints at or before step ``up_to`` (each renamed
    out of the ``step_*`` names first); newer ones are never counted or touched."""
    found = [(s, p) for s, p in list_checkpoints(root) if up_to is None or s <= up_to]
    for _, path in found[:-keep]:
        atomic_dirs.remove(path)


def read_checkpoint(path: Path, model_names) -> tuple[dict, dict[str, dict]]:
    """The trainer state and each model's weights of ``path``, all read and checked before
    anything is applied; ``CheckpointUnreadable`` names the damaged file."""
    if not (path / STATE_JSON).exists():
        if (path / LEGACY_STATE_FILE).exists():
            raise CheckpointUnreadable(
                f"{path / LEGACY_STATE_FILE} is a pickle (written by placerl before trainer "
                "state became data-only); a pickle can run code when loaded, so it is not "
                "loaded. Resume from a checkpoint written by this placerl version, or train "
                "again in a new run_dir"
            )
        raise CheckpointUnreadable(f"{path} has no {STATE_JSON}")
    try:
        state = load_state_files(path)
    except StateError as err:
        raise CheckpointUnreadable(f"{path}: {err}") from err
    weights = {name: read_weights(path / name) for name in model_names}
    return state, weights


def load_state(path: Path) -> dict:
    """The trainer state of checkpoint ``path`` (``UserError`` when it cannot be read)."""
    try:
        return read_checkpoint(path, ())[0]
    except CheckpointUnreadable as err:
        raise UserError(str(err), where=str(path)) from err


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointUnreadable(f"{directory} holds no .safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            weights.update(load_file(file))
        except Exception as err:  # safetensors' own error types: truncated, not safetensors
            raise CheckpointUnreadable(f"{file} is truncated or damaged ({err})") from err
    return weights


def load_weights(model, directory: Path) -> None:
    """Load a saved model directory's safetensors into ``model`` in place (exact); for a LoRA
    model, the adapter directory it was saved as (its base is rebuilt from ``model.path``)."""
    try:
        weights = read_weights(directory)
    except CheckpointUnreadable as err:
        raise UserError(str(err), where=str(directory)) from err
    apply_weights(model, weights, directory)


def apply_weights(model, weights: dict[str, torch.Tensor], directory: Path) -> None:
    """Put ``weights`` (read from ``directory`` by ``read_weights``) into ``model``."""
    if is_lora(model):
        load_lora(model, directory)  # the adapter file, already checked to be readable
        return
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())  # a list or a dict's keys
    untied_missing = [k for k in missing if k not in tied]
    if untied_missing or unexpected:
        raise UserError(
            f"checkpoint weights do not match the model (missing {untied_missing[:3]}, "
            f"unexpected {unexpected[:3]})",
            where=str(directory),
        )
    if missing:  # tied weights (e.g. lm_head = embeddings) are saved once
        model.tie_weights()


def capture_rng() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def export_model(model, tokenizer, directory: Path, step: int | None = None) -> Path:
    """Save a final model directory atomically (for the next stage or for the user): written
    aside, then swapped in by rename, so a kill never leaves ``directory`` missing or partial.

    A LoRA model is saved as a peft adapter directory; with ``model.lora.merge_on_export``
    the merged model goes next to it, as ``<name>_merged/``. A LoRA model whose base is itself
    an adapter (a LoRA stage after a LoRA stage) also writes that base, ``<name>_base/``, and
    the adapter names it, so peft alone loads the export (``models/lora_export.py``)."""
    require_finite_weights({directory.name: model}, step or 0, f"export to {directory}")
    settings = lora_settings(model) if is_lora(model) else None
    if settings is not None and settings.merge_on_export:
        merged = directory.with_name(f"{directory.name}_merged")
        _atomic_dir(merged, lambda tmp: save_merged(model, tmp), tokenizer)
    if not base_is_adapter(model):
        return _atomic_dir(directory, lambda tmp: save_model(model, tmp), tokenizer)
    base = directory.with_name(f"{directory.name}_base")
    _atomic_dir(base, lambda tmp: save_base(model, tmp), tokenizer)
    with base_named(model, base):
        return _atomic_dir(directory, lambda tmp: save_model(model, tmp), tokenizer)


def _atomic_dir(directory: Path, save, tokenizer) -> Path:
    tmp = atomic_dirs.temp_name(directory, "tmp")
    atomic_dirs.remove(tmp)
    save(tmp)
    save_tokenizer(tokenizer, tmp)
    atomic_dirs.fsync_tree(tmp)
    atomic_dirs.replace(tmp, directory)
    return directory
