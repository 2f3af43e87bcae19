"""Atomic checkpoints and exact resume.

A checkpoint is a directory ``checkpoints/step_000123/`` holding one Hugging Face model
directory per trained model (safetensors; ``from_pretrained`` loads it), the tokenizer, and
``trainer_state.pt`` with everything else a bitwise-exact resume needs: optimizer and scheduler
states, random-generator states, the data position, controller state (e.g. the KL
coefficient). It is written under a temporary name and renamed into place, so a process
killed at any instant leaves either the previous checkpoints or the new complete one — never
a partial directory under a ``step_*`` name.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from placerl.errors import UserError
from placerl.models.factory import save_tokenizer
from placerl.models.lora import is_lora, load_lora, lora_settings, save_merged, save_model

_STEP_DIR = re.compile(r"^step_(\d{6,})$")
STATE_FILE = "trainer_state.pt"


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first (temporary directories are ignored)."""
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
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, model in models.items():
        save_model(model, tmp / name)
        save_tokenizer(tokenizer, tmp / name)
    torch.save(state | {"step": step, "rng": capture_rng()}, tmp / STATE_FILE)
    _fsync_tree(tmp)
    if final.exists():  # a re-run of the same step: replace it, old one out of the way first
        old = root / f".old-{final.name}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    if keep is not None:
        for _, path in list_checkpoints(root)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
    return final


def load_state(path: Path) -> dict:
    file = path / STATE_FILE
    if not file.exists():
        raise UserError("checkpoint has no trainer state", where=str(path))
    return torch.load(file, weights_only=False)


def load_weights(model, directory: Path) -> None:
    """Load a saved model directory's safetensors into ``model`` in place (exact); for a LoRA
    model, the adapter directory it was saved as (its base is rebuilt from ``model.path``)."""
    if is_lora(model):
        load_lora(model, directory)
        return
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise UserError("no .safetensors weights in checkpoint directory", where=str(directory))
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(file))
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


def export_model(model, tokenizer, directory: Path) -> Path:
    """Save a final model directory atomically (for the next stage or for the user).

    A LoRA model is saved as a peft adapter directory; with ``model.lora.merge_on_export``
    the merged model goes next to it, as ``<name>_merged/``."""
    settings = lora_settings(model) if is_lora(model) else None
    if settings is not None and settings.merge_on_export:
        merged = directory.with_name(f"{directory.name}_merged")
        _atomic_dir(merged, lambda tmp: save_merged(model, tmp), tokenizer)
    return _atomic_dir(directory, lambda tmp: save_model(model, tmp), tokenizer)


def _atomic_dir(directory: Path, save, tokenizer) -> Path:
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    save_tokenizer(tokenizer, tmp)
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
