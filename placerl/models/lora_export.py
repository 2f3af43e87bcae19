"""Exports of a LoRA stage that start from an adapter load with transformers + peft alone.

A LoRA stage whose ``model.path`` is an adapter directory (SFT with LoRA → DPO or GRPO with
LoRA) trains its new adapter on a base that no plain model directory holds: the earlier
adapter merged into *its* base (``models/loading.py``). peft's recipe,
``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir)``, would
read ``base`` as a model directory and put the earlier adapter *beside* the new one instead of
under it (a different model, with only a "multiple adapters" warning).

So the export of such a stage writes that base next to the adapter, ``<name>_base/``: a plain
model directory of the exact weights the adapter was trained on (taken from memory, not
re-read from the earlier run, which may have changed since), with the tokenizer; and the
adapter's ``base_model_name_or_path`` names it. Any chain of LoRA stages then exports an
adapter on a plain model, one level deep. Checkpoints (``checkpoints/step_*/``) are for
resume and keep the run's own ``model.path`` as their base: placerl loads them
(``placerl export RUN --merge``), plain peft does not.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from placerl.models.lora import BASE_IS_ADAPTER, _quiet_peft, is_lora


def base_is_adapter(model: nn.Module) -> bool:
    """Whether ``model`` is a LoRA model whose base is an adapter merged into its own base."""
    return is_lora(model) and bool(getattr(model, BASE_IS_ADAPTER, False))


def save_base(model: nn.Module, directory: Path) -> None:
    """The base of a LoRA model (adapters removed, not merged) as a plain model directory. The
    live model is not changed: unloading runs on a copy (a second model, once, at export)."""
    with _quiet_peft():
        copy.deepcopy(model).unload().save_pretrained(directory)


@contextlib.contextmanager
def base_named(model: nn.Module, base: Path) -> Iterator[None]:
    """The LoRA model's adapter config names ``base`` for the duration (a save inside it
    records it); restored afterwards, so later checkpoints keep the run's own base."""
    config = model.peft_config["default"]
    before = config.base_model_name_or_path
    config.base_model_name_or_path = str(Path(base).resolve())
    try:
        yield
    finally:
        config.base_model_name_or_path = before
