"""LoRA (peft) on placerl's models: adapters on, the base model for free, adapter-only I/O.

- ``apply_lora`` wraps a loaded model in a ``peft`` model: adapters on the linear layers named
  by ``model.lora.target_modules`` (``all-linear``: every linear layer of the backbone; never
  the LM head, which would be a vocabulary-sized adapter), the value/score head of a critic or
  reward model trained in full (peft ``modules_to_save``). The base weights are frozen, so
  optimizers (built over ``requires_grad`` parameters) hold state for the adapters only. The
  adapters' random initialisation is seeded by ``model.lora.seed`` inside a forked RNG, so
  every worker builds the same adapters and the run's other random streams are unchanged.
- ``adapter_disabled(model)`` and ``FrozenBase``: the base model *is* the LoRA model with its
  adapters switched off (verl computes reference log-probs this way), so a reference or a
  frozen sampler needs no second copy of the weights. Only the layers' ``_disable_adapters``
  flags are flipped: peft's own ``disable_adapter()`` also toggles ``requires_grad``, which
  FSDP2 does not expect mid-run, and scans the model each call.
- ``adapter_tensors``: what changes in training (adapters and heads), which is all that a
  weight sync needs to move and a checkpoint needs to store.
- Saving: a LoRA model's ``save_pretrained`` writes a peft adapter directory (loadable with
  ``PeftModel.from_pretrained`` on the base); ``save_merged`` the merged model;
  ``load_lora`` reloads a saved adapter into a model built the same way, exactly (resume);
  ``load_merged`` turns an adapter directory into a plain model (the next stage's input).
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from placerl.config.lora import ALL_LINEAR, LoraConfig
from placerl.errors import UserError

WHERE = "model.lora.target_modules"
ADAPTER_CONFIG = "adapter_config.json"
HEAD_NAMES = ("lm_head", "score", "classifier")  # output heads: never adapted
TASK_TYPES = {"policy": "CAUSAL_LM", "critic": "TOKEN_CLS", "reward_model": "SEQ_CLS"}
ARCHITECTURE_OF_TASK = {
    "CAUSAL_LM": "CausalLM",
    "TOKEN_CLS": "TokenClassification",
    "SEQ_CLS": "SequenceClassification",
}
_SETTINGS = "placerl_lora"  # the LoraConfig a model was built with (export reads it)
BASE_IS_ADAPTER = "placerl_base_is_adapter"  # its base was loaded from an adapter directory


def is_lora(model) -> bool:
    """Whether ``model`` is a peft model (a LoRA policy, critic or reward model)."""
    try:
        from peft import PeftModel
    except ImportError:  # peft absent: nothing can be a LoRA model
        return False
    return isinstance(model, PeftModel)


def lora_settings(model) -> LoraConfig | None:
    return getattr(model, _SETTINGS, None)


# ------------------------------------------------------------------------------ building


def _head_names(model: nn.Module) -> list[str]:
    """Top-level output heads of a Hugging Face model (LM head, value/score head)."""
    heads = [name for name in HEAD_NAMES if isinstance(getattr(model, name, None), nn.Module)]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_children():
        if out is not None and module is out and name not in heads:
            heads.append(name)
    return heads


def target_modules(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """The leaf names of the linear layers that get adapters, checked against ``model``.

    ``all-linear`` takes every ``nn.Linear`` outside the heads (by leaf name, which peft
    matches as a suffix; by full name where a head has a linear layer of the same leaf name).
    A given list must name linear layers of the backbone (by leaf name, e.g. ``q_proj``, or a
    dotted suffix); a name that matches nothing, or a head, is an error listing what the model
    has.
    """
    heads = set(_head_names(model))
    all_linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    linear = [name for name in all_linear if name.split(".")[0] not in heads]
    leaves = sorted({name.rsplit(".", 1)[-1] for name in linear})
    if not linear:
        raise UserError("the model has no linear layers to put adapters on", where=WHERE)
    if cfg.target_modules == ALL_LINEAR:
        in_heads = {name.rsplit(".", 1)[-1] for name in all_linear if name not in linear}
        return linear if in_heads & set(leaves) else leaves
    for name in cfg.target_modules:
        if name in heads:
            raise UserError(
                f"{name!r} is the model's output head; heads are not adapted (a value or score "
                "head is trained in full, the LM head stays frozen). Expected some of: "
                + ", ".join(leaves),
                where=WHERE,
            )
        if not any(n == name or n.endswith("." + name) for n in linear):
            raise UserError(
                f"no linear layer of the model is named {name!r}; its linear layers are: "
                + ", ".join(leaves),
                where=WHERE,
            )
    return list(cfg.target_modules)


def apply_lora(model: nn.Module, cfg: LoraConfig, kind: str = "policy") -> nn.Module:
    """``model`` (a loaded policy, critic or reward model) as a peft LoRA model (module doc)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    heads = [h for h in _head_names(model) if h != "lm_head"] if kind != "policy" else []
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target_modules(model, cfg),
        modules_to_save=heads or None,
        task_type=TASK_TYPES[kind],
        bias="none",
    )
    base = getattr(model.config, "_name_or_path", "") or ""
    with torch.random.fork_rng(devices=[]), _quiet_peft():
        torch.manual_seed(cfg.seed)
        peft_model = get_peft_model(model, peft_cfg)
    if base and Path(base).exists():  # the adapter directory names its base absolutely
        peft_model.peft_config["default"].base_model_name_or_path = str(Path(base).resolve())
    # recorded while the directory surely exists (it was just loaded): models/lora_export.py
    object.__setattr__(peft_model, BASE_IS_ADAPTER, bool(base) and adapter_config(base) is not None)
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers < 5.24
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks need it
    object.__setattr__(peft_model, _SETTINGS, cfg)
    return peft_model


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: not the user's news."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def with_lora(model: nn.Module, cfg: LoraConfig | None, kind: str = "policy") -> nn.Module:
    """``apply_lora`` when ``model.lora`` is set; the model unchanged when it is null."""
    return model if cfg is None else apply_lora(model, cfg, kind)


# ----------------------------------------------------------------------- the base for free


def reference_is_base(reference: str | None, policy_path) -> bool:
    """Whether the reference is the policy's starting point (no other ``reference:`` named),
    so that a LoRA policy's base can serve as the reference."""
    return reference is None or Path(reference).resolve() == Path(policy_path).resolve()


def _adapter_layers(model: nn.Module) -> list[nn.Module]:
    layers = model.__dict__.get("_placerl_adapter_layers")
    if layers is None:
        layers = [m for m in model.modules() if hasattr(m, "_disable_adapters")]
        model.__dict__["_placerl_adapter_layers"] = layers
    return layers


@contextlib.contextmanager
def adapter_disabled(model: nn.Module, eval_mode: bool = True) -> Iterator[None]:
    """Run ``model`` as its base for the duration (adapters off, trained heads swapped for the
    original ones), in eval mode unless asked otherwise; everything restored afterwards."""
    layers = _adapter_layers(model)
    before = [m._disable_adapters for m in layers]
    was_training = model.training
    if eval_mode and was_training:
        model.eval()
    for m in layers:
        m._disable_adapters = True
    try:
        yield
    finally:
        for m, flag in zip(layers, before, strict=True):
            m._disable_adapters = flag
        if eval_mode and was_training:
            model.train()


class FrozenBase(nn.Module):
    """The base model of a LoRA model as a module of its own: every forward runs with the
    adapters disabled. The LoRA model is *not* a submodule, so ``eval()`` or
    ``requires_grad_(False)`` on this view leave the trained model alone, and the view has no
    parameters of its own (it costs no memory)."""

    def __init__(self, lora_model: nn.Module):
        super().__init__()
        self.__dict__["lora_model"] = lora_model
        self.train(False)

    @property
    def config(self):
        return self.lora_model.config

    def get_base_model(self) -> nn.Module:
        return self.lora_model.get_base_model()

    def forward(self, *args, **kwargs):
        with adapter_disabled(self.lora_model, eval_mode=not self.training):
            return self.lora_model(*args, **kwargs)


# ------------------------------------------------------------------------ what changes


def is_adapter_key(name: str) -> bool:
    """A state-dict name of a trained tensor of a LoRA model: an adapter or a saved head."""
    return ".lora_" in name or ".modules_to_save." in name


def adapter_tensors(weights: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The adapters' (and trained heads') tensors of a LoRA model or of its state dict, by
    state-dict name; the module's own tensors (writing into them updates the model)."""
    if isinstance(weights, nn.Module):
        weights = weights.state_dict(keep_vars=True)
    return {name: t for name, t in weights.items() if is_adapter_key(name)}


def trained_state(model: nn.Module, weights: Mapping[str, Tensor] | None = None) -> dict:
    """What training changes, on CPU, for moving between processes (controller mirrors,
    rollout copies in checkpoints): a LoRA model's adapters, else the whole state dict.
    ``weights`` is the model's state dict when already gathered (FSDP)."""
    weights = model.state_dict() if weights is None else weights
    if is_lora(model):
        weights = adapter_tensors(weights)
    return {k: v.detach().cpu() for k, v in weights.items()}


def load_trained_state(model: nn.Module, weights: Mapping[str, Tensor]) -> None:
    """Load ``trained_state`` into a model built the same way (strict: every tensor it moves,
    nothing else; a LoRA model's base is already the same everywhere)."""
    if not is_lora(model):
        model.load_state_dict(weights)
        return
    expected, got = set(adapter_tensors(model)), set(weights)
    if got != expected:
        raise ValueError(
            f"LoRA weights do not match the model: missing {sorted(expected - got)[:3]}, "
            f"unexpected {sorted(got - expected)[:3]}"
        )
    model.load_state_dict(weights, strict=False)


def parameter_bytes(*models: nn.Module) -> int:
    """Bytes of the distinct parameter and buffer storages of ``models`` (shared ones once)."""
    seen: set[int] = set()
    total = 0
    for model in models:
        for tensor in [*model.parameters(), *model.buffers()]:
            key = tensor.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += tensor.untyped_storage().nbytes()
    return total


# ------------------------------------------------------------------------ saving, loading


def save_model(model: nn.Module, directory: Path) -> None:
    """``save_pretrained``: a LoRA model as its adapter directory. Embeddings are never
    adapted here, so peft is told not to look for changed ones (it would read the base's
    config.json, which an adapter base does not have)."""
    if is_lora(model):
        model.save_pretrained(directory, save_embedding_layers=False)
    else:
        model.save_pretrained(directory)


def save_merged(model: nn.Module, directory: Path) -> None:
    """The LoRA model with its adapter merged, as a plain Hugging Face model directory (an
    adapter directory is ``model.save_pretrained``). The live model is not changed: merging
    runs on a copy (peak memory: a second model, once, at export)."""
    copy.deepcopy(model).merge_and_unload().save_pretrained(directory)


def load_lora(model: nn.Module, directory: Path) -> None:
    """Load the adapter saved in ``directory`` into ``model`` (built the same way), exactly."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    file = directory / "adapter_model.safetensors"
    if not file.exists():
        raise UserError(
            "no adapter_model.safetensors: this checkpoint was not saved from a LoRA model "
            "(was model.lora changed since?)",
            where=str(directory),
        )
    weights = load_file(file)
    result = set_peft_model_state_dict(model, weights)
    expected = set(adapter_tensors(model))
    missing = [k for k in result.missing_keys if k in expected]
    if result.unexpected_keys or missing:
        raise UserError(
            f"the adapter does not match the model (missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}); resume with the same model.lora",
            where=str(directory),
        )


def adapter_config(path: Path) -> dict | None:
    """The peft adapter config of a directory that holds an adapter and no full model."""
    path = Path(path)
    file = path / ADAPTER_CONFIG
    if (path / "config.json").exists() or not file.exists():
        return None
    return json.loads(file.read_text())


def load_merged(cls, path: Path, load) -> nn.Module:
    """A model of class ``cls`` from an adapter directory: its base (``load(cls, base,
    **kwargs)``, which may itself be an adapter directory) with the adapter merged in, a
    trained head of the adapter (``modules_to_save``) in place of the base's.

    peft attaches an adapter to the class it was trained on only, so the adapter's own class
    is built and merged first; when ``cls`` is another head over the same backbone (a critic
    from a reward model's adapter, a reward model from a policy's), the merged tensors go into
    a ``cls`` model by name, as ``from_pretrained`` does across heads: the backbone, and a
    head of the same name and shape; other heads keep their initialisation."""
    from peft import PeftModel
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    classes = {
        "CAUSAL_LM": (AutoModelForCausalLM, {}),
        "SEQ_CLS": (AutoModelForSequenceClassification, {"num_labels": 1}),
        "TOKEN_CLS": (AutoModelForTokenClassification, {"num_labels": 1}),
    }
    config = adapter_config(path)
    base = config.get("base_model_name_or_path") if config else None
    if not base or not Path(base).exists():
        raise UserError(
            f"adapter directory names base model {base!r}, which does not exist here; "
            "export with model.lora.merge_on_export=true, or restore the base",
            where=str(Path(path) / ADAPTER_CONFIG),
        )
    own, extra = classes.get(config.get("task_type"), (cls, {}))
    with _quiet_peft():
        merged = PeftModel.from_pretrained(load(own, base, **extra), str(path)).merge_and_unload()
    if own is cls:
        return merged
    model = load(cls, base)
    theirs, mine = merged.state_dict(), model.state_dict()
    same = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    model.load_state_dict(same, strict=False)
    return model


def sync_view(weights):
    """What a weight sync moves: a LoRA model's adapters (and trained heads) only — its base
    never changes — else everything (``weights`` as given)."""
    if isinstance(weights, nn.Module) and is_lora(weights):
        return adapter_tensors(weights)
    return weights
