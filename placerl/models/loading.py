"""Load Hugging Face models and tokenizers from local directories, with clear errors.

Three heads over one backbone family, all plain ``transformers`` classes so checkpoints load
back with ``from_pretrained``: the policy (causal LM), the critic (token classification with
one label: a value per token) and the reward model (sequence classification with one label: a
score read at the last non-pad token).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from placerl.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: paths are local


def _check_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} directory does not exist", where=str(path))
    if not (path / "config.json").exists() and what != "tokenizer":
        raise UserError(f"{what} directory has no config.json (not a saved model)", where=str(path))
    return path


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token and left padding (prompts are left-padded for sampling)."""
    path = _check_dir(path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # tokenizers raises a bare Exception for a garbled tokenizer.json
        raise UserError(f"cannot load a tokenizer: {err}", where=str(path)) from None
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise UserError("tokenizer has neither a pad nor an EOS token", where=str(path))
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _check_weight_files(path: Path, what: str) -> None:
    """Open every ``*.safetensors`` header first, so a truncated or garbled weight file is
    named (``from_pretrained`` would end in a safetensors traceback that names no file)."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as err:
            raise UserError(
                f"cannot load the {what}: {file.name} is truncated or not a safetensors file "
                f"({err}); copy or export the model again",
                where=str(file),
            ) from None


def _load(cls, path: str | Path, what: str, **kwargs) -> PreTrainedModel:
    path = _check_dir(path, what)
    _check_weight_files(path, what)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a freshly initialised head is expected here, not news
    try:
        model = cls.from_pretrained(path, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        # a config.json or weight file that parses but does not fit the class or its shapes
        raise UserError(f"cannot load the {what}: {err}", where=str(path)) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


def disable_dropout(model: PreTrainedModel) -> PreTrainedModel:
    """RL compares log-probs and values across passes (sampling vs training, old vs new);
    dropout would make them disagree, so every dropout layer is switched off."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for key in (
        "attention_dropout",
        "hidden_dropout",
        "classifier_dropout",
        "resid_pdrop",
        "attn_pdrop",
        "embd_pdrop",
    ):
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)
    return model


def load_policy(path: str | Path) -> PreTrainedModel:
    return disable_dropout(_load(AutoModelForCausalLM, path, "policy model"))


def load_value_model(path: str | Path, pad_token_id: int) -> PreTrainedModel:
    """A critic: the backbone at ``path`` with a per-token scalar head (new if absent).

    A new head starts at zero so the first values are 0 and early advantages are the rewards.
    """
    model = disable_dropout(_load(AutoModelForTokenClassification, path, "critic", num_labels=1))
    model.config.pad_token_id = pad_token_id
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is not None and not _has_architecture(path, "TokenClassification"):
        torch.nn.init.zeros_(head.weight)
        if getattr(head, "bias", None) is not None:
            torch.nn.init.zeros_(head.bias)
    return model


def load_reward_model(
    path: str | Path, pad_token_id: int, trained: bool = False
) -> PreTrainedModel:
    """A reward model: the backbone at ``path`` with a sequence-level scalar head.

    Training a reward model starts from any backbone (``trained=False``); *using* one requires
    a checkpoint saved with a one-label sequence-classification head, or its scores would come
    from a random head.
    """
    if trained and not _has_architecture(path, "SequenceClassification"):
        raise UserError(
            "not a reward model: config.json's architectures has no *ForSequenceClassification "
            "(train one with stage: rm)",
            where=str(path),
        )
    model = disable_dropout(
        _load(AutoModelForSequenceClassification, path, "reward model", num_labels=1)
    )
    model.config.pad_token_id = pad_token_id
    return model


def _has_architecture(path: str | Path, kind: str) -> bool:
    """Whether the checkpoint at ``path`` was saved as a ``*For<kind>`` model."""
    import json

    config_file = Path(path) / "config.json"
    if not config_file.exists():
        return False
    archs = json.loads(config_file.read_text()).get("architectures") or []
    return any(kind in a for a in archs)
