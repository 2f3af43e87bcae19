"""Model shapes for the cost model: from a ``config.json`` or a named Llama size.

Only what the formulas need: layers, hidden size, MLP width, attention and KV heads, vocab,
tied embeddings. ``params`` and ``flops_per_token`` are the standard dense-decoder counts
(Kaplan et al. 2020, arXiv 2001.08361, with the SwiGLU MLP's three matrices and grouped-query
K/V); a value model (critic, reward model) has a scalar head instead of the LM head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from placerl.errors import UserError


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False
    scalar_head: bool = False  # critic / reward model: hidden -> 1 instead of hidden -> vocab

    @cached_property
    def kv_dim(self) -> int:
        """Width of K (and of V): ``kv_heads · head_dim``."""
        return self.kv_heads * (self.hidden // self.heads)

    @cached_property
    def layer_params(self) -> int:
        """One block: Q and O (h·h each), K and V (h·kv_dim each), the SwiGLU MLP (3·h·f),
        two RMSNorm weights (2·h)."""
        h = self.hidden
        return 2 * h * h + 2 * h * self.kv_dim + 3 * h * self.intermediate + 2 * h

    @cached_property
    def head_params(self) -> int:
        """The output head: ``h`` for a scalar head, ``h·V`` for an untied LM head, 0 tied."""
        if self.scalar_head:
            return self.hidden + 1
        return 0 if self.tied else self.hidden * self.vocab

    @cached_property
    def params(self) -> int:
        """Embedding (V·h) + blocks + final norm (h) + head."""
        return (
            self.vocab * self.hidden
            + self.layers * self.layer_params
            + self.hidden
            + (self.head_params)
        )

    @cached_property
    def matmul_params(self) -> int:
        """Parameters a token multiplies through: the blocks and the head (the embedding is a
        lookup; a tied head still multiplies by V·h)."""
        head = self.hidden * self.vocab if self.tied and not self.scalar_head else self.head_params
        return self.layers * self.layer_params + head

    def flops_per_token(self, context: float) -> float:
        """Forward FLOPs of one token that attends to ``context`` tokens: 2 per multiplied
        parameter plus attention's QKᵀ and AV (2·2·h per attended token per layer)."""
        return 2.0 * self.matmul_params + 4.0 * self.layers * self.hidden * context

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV cache of one token: K and V of every layer."""
        return 2 * self.layers * self.kv_dim * dtype_bytes

    def as_value_model(self) -> ModelShape:
        return replace(self, name=f"{self.name}+value-head", scalar_head=True, tied=False)


# Llama-2 7B/13B/70B (Touvron et al. 2023, arXiv 2307.09288, and the HF config.json files);
# 34B is Code Llama 34B (arXiv 2308.12950): grouped-query attention with 8 KV heads.
NAMED = {
    "7B": ModelShape("llama-7B", 32, 4096, 11008, 32, 32, 32000),
    "13B": ModelShape("llama-13B", 40, 5120, 13824, 40, 40, 32000),
    "34B": ModelShape("llama-34B", 48, 8192, 22016, 64, 8, 32000),
    "70B": ModelShape("llama-70B", 80, 8192, 28672, 64, 8, 32000),
}


def named_shape(name: str) -> ModelShape:
    key = name.upper().removeprefix("LLAMA-")
    if key not in NAMED:
        raise UserError(f"unknown model size {name!r}; known: {', '.join(NAMED)}", where="model")
    return NAMED[key]


def shape_from_config(config: dict, name: str = "model") -> ModelShape:
    """The shape from a Hugging Face ``config.json`` dict (Llama/Qwen2/Mistral keys)."""
    try:
        heads = int(config["num_attention_heads"])
        return ModelShape(
            name=name,
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
        )
    except KeyError as err:
        raise UserError(f"config.json has no {err.args[0]!r}", where=name) from None


ADAPTER_CONFIG = "adapter_config.json"  # a peft LoRA adapter directory (no config.json)


def adapter_base(path: Path) -> Path | None:
    """The base model an adapter directory names (``base_model_name_or_path``), as written or
    relative to the adapter's parent directory; None when ``path`` is no adapter directory."""
    file = path / ADAPTER_CONFIG
    if (path / "config.json").is_file() or not file.is_file():
        return None
    base = json.loads(file.read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{file} names no base_model_name_or_path", where=str(path))
    for candidate in (Path(base), path.parent / base):
        if candidate.is_dir():
            return candidate
    raise UserError(
        f"the adapter's base model {base!r} ({file}) is not a directory here: the planner "
        "reads the shape from it",
        where=str(path),
    )


def shape_from_dir(path: str | Path) -> ModelShape | None:
    """The shape of a model directory's ``config.json`` — of its base's, recursively, for a
    LoRA adapter directory (the adapter adds no matmuls the cost model counts); None when
    the directory has neither."""
    path = Path(path)
    seen: list[Path] = []
    while (base := adapter_base(path)) is not None:
        seen.append(path)
        if base.resolve() in {p.resolve() for p in seen} or len(seen) > 16:
            raise UserError(f"the adapters' bases go round in a circle: {seen}", where=str(path))
        path = base
    file = path / "config.json"
    if not file.is_file():
        return None
    name = Path(seen[0] if seen else path).name
    return shape_from_config(json.loads(file.read_text()), name=name)


def model_shape(path: str | Path, what: str = "model.path") -> ModelShape:
    """``shape_from_dir``, or an error that names the directory (never a silent default:
    planning for another model than the one that will run is worse than not planning)."""
    shape = shape_from_dir(path)
    if shape is None:
        raise UserError(
            f"cannot read the model's shape from {path}: no config.json there (nor an "
            f"{ADAPTER_CONFIG} naming a base model that has one)",
            where=what,
        )
    return shape


def tiny_default() -> ModelShape:
    """The built-in tiny Llama (``placerl.models.factory.TinyLlamaSize``, 512-token BPE)."""
    return ModelShape("tiny-llama", 6, 256, 1024, 8, 4, 512, tied=False)
