"""Load Hugging Face models and tokenizers from local directories, with clear errors.

Three heads over one backbone family, all plain ``transformers`` classes so checkpoints load
back with ``from_pretrained``: the policy (causal LM), the critic (token classification with
one label: a value per token) and the reward model (sequence classification with one label: a
score read at the last attended token, see ``models/scores.py::sequence_scores``).

Every model is loaded with the run's ``LoadOptions`` (``model.attn_implementation``,
``model.trust_remote_code``). Nothing here writes a pad token into a model's config or a
tokenizer's files: a tokenizer without one pads with its EOS id in memory only (see
``models/tokens.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
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
from placerl.models.lora import ARCHITECTURE_OF_TASK, adapter_config, load_merged
from placerl.models.paths import require_dir, require_model_files, require_tokenizer_files
from placerl.models.tokens import SOURCE_ATTR

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: paths are local

log = logging.getLogger(__name__)
_warned_pad: set[str] = set()
_said_remote_code: set[str] = set()


@dataclass(frozen=True)
class LoadOptions:
    """What every ``from_pretrained`` of a run gets, from the ``model`` config section.

    ``attn_implementation``: sdpa (PyTorch's fused attention, the default), eager, or
    flash_attention_2 (needs the flash-attn package and a GPU). ``trust_remote_code`` runs the
    Python files shipped in a model directory; off unless asked, and said in the log when on.
    ``dtype``: fp32 for trained models (their master weights, whatever the checkpoint's dtype),
    the training compute dtype for frozen ones (``frozen=True``; models/precision.py).
    """

    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False
    dtype: torch.dtype = torch.float32

    @classmethod
    def of(cls, model_cfg, frozen: bool = False) -> LoadOptions:
        """The options of a ``ModelConfig`` (a missing field keeps its default); ``frozen``:
        for a model that is never trained (reference, reward model, a frozen sampler)."""
        from placerl.models.precision import frozen_dtype

        precision = getattr(model_cfg, "precision", "fp32")
        return cls(
            attn_implementation=getattr(model_cfg, "attn_implementation", cls.attn_implementation),
            trust_remote_code=bool(getattr(model_cfg, "trust_remote_code", False)),
            dtype=frozen_dtype(precision) if frozen else torch.float32,
        )

    def kwargs(self, path: str | Path) -> dict:
        if self.trust_remote_code and str(path) not in _said_remote_code:
            _said_remote_code.add(str(path))
            log.warning("model.trust_remote_code is on: running the code shipped in %s", path)
        return {"trust_remote_code": self.trust_remote_code}


DEFAULT = LoadOptions()


def _check_dir(path: str | Path, what: str) -> Path:
    path = require_dir(path, what)
    if what == "tokenizer":
        require_tokenizer_files(path)
    else:
        require_model_files(path, what)
    return path


def load_tokenizer(path: str | Path, options: LoadOptions = DEFAULT) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad id and left padding (prompts are left-padded for sampling).

    A tokenizer without a pad token (most base and chat tokenizers: Llama, Qwen2) pads with
    its EOS id. Only in memory: padded positions are always under a zero attention mask, and
    exports copy the tokenizer's own files (``save_tokenizer``), so nothing on disk changes.
    """
    path = _check_dir(path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(path, **options.kwargs(path))
    except Exception as err:  # tokenizers raises a bare Exception for a garbled tokenizer.json
        raise UserError(f"cannot load a tokenizer: {err}", where=str(path)) from None
    setattr(tok, SOURCE_ATTR, str(path))
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise UserError("tokenizer has neither a pad nor an EOS token", where=str(path))
        if str(path) not in _warned_pad:
            _warned_pad.add(str(path))
            log.warning(
                "the tokenizer in %s has no pad token: padding with its EOS token %r (id %d) "
                "under attention masks, in memory only; its files are exported unchanged",
                path,
                tok.eos_token,
                tok.eos_token_id,
            )
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


def _load(cls, path: str | Path, what: str, options: LoadOptions, **kwargs) -> PreTrainedModel:
    if adapter_config(path) is not None:  # a LoRA stage's output: its base, adapter merged
        model = load_merged(
            cls,
            Path(path),
            lambda c, base, **extra: _load(c, base, what, options, **(kwargs | extra)),
        )
        model.config._name_or_path = str(path)  # a new adapter's base is this directory
        return model
    path = _check_dir(path, what)
    _check_weight_files(path, what)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a freshly initialised head is expected here, not news
    try:
        model = cls.from_pretrained(
            path,
            dtype=options.dtype,
            attn_implementation=options.attn_implementation,
            **options.kwargs(path),
            **kwargs,
        )
    except ImportError as err:  # flash_attention_2 without the flash-attn package
        raise UserError(
            f"model.attn_implementation={options.attn_implementation!r} cannot be used here: "
            f"{err}; use 'sdpa' (the default) or 'eager'",
            where="model.attn_implementation",
        ) from None
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


def load_policy(path: str | Path, options: LoadOptions = DEFAULT) -> PreTrainedModel:
    """The causal LM at ``path``, with its ``generation_config`` (end tokens) as saved."""
    return disable_dropout(_load(AutoModelForCausalLM, path, "policy model", options))


def load_value_model(
    path: str | Path, pad_token_id: int | None = None, options: LoadOptions = DEFAULT
) -> PreTrainedModel:
    """A critic: the backbone at ``path`` with a per-token scalar head (new if absent).

    A new head starts at zero so the first values are 0 and early advantages are the rewards.
    ``pad_token_id`` is accepted for old callers and not used: values are read under masks.
    """
    model = disable_dropout(
        _load(AutoModelForTokenClassification, path, "critic", options, num_labels=1)
    )
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is not None and not _has_architecture(path, "TokenClassification"):
        torch.nn.init.zeros_(head.weight)
        if getattr(head, "bias", None) is not None:
            torch.nn.init.zeros_(head.bias)
    return model


def load_reward_model(
    path: str | Path,
    pad_token_id: int | None = None,
    trained: bool = False,
    options: LoadOptions = DEFAULT,
) -> PreTrainedModel:
    """A reward model: the backbone at ``path`` with a sequence-level scalar head.

    Training a reward model starts from any backbone (``trained=False``); *using* one requires
    a checkpoint saved with a one-label sequence-classification head, or its scores would come
    from a random head. The score is read at the last attended token, computed from the
    attention mask (``models/scores.py::sequence_scores``), not from a pad id: so no pad id is
    written into the config (``pad_token_id`` is accepted for old callers and not used).
    """
    if trained and not _has_architecture(path, "SequenceClassification"):
        raise UserError(
            "not a reward model: config.json's architectures has no *ForSequenceClassification "
            "(train one with stage: rm)",
            where=str(path),
        )
    return disable_dropout(
        _load(AutoModelForSequenceClassification, path, "reward model", options, num_labels=1)
    )


def _has_architecture(path: str | Path, kind: str) -> bool:
    """Whether the checkpoint at ``path`` was saved as a ``*For<kind>`` model."""
    import json

    adapter = adapter_config(path)
    if adapter is not None:  # a LoRA stage's output: the adapter's task says what it was
        return kind == ARCHITECTURE_OF_TASK.get(adapter.get("task_type"))
    config_file = Path(path) / "config.json"
    if not config_file.exists():
        return False
    archs = json.loads(config_file.read_text()).get("architectures") or []
    return any(kind in a for a in archs)
