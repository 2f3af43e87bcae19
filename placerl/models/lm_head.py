"""A causal LM as (decoder, LM head), and gradient checkpointing for trained models.

Training never needs a (B, T, V) logits tensor: it needs log p of the tokens it has. Running
the decoder alone gives the (B, T, H) hidden states, and ``models/logprobs.token_log_probs``
projects them through the head a chunk at a time. ``split_lm`` says when a model can be
split that way; models it cannot split (logit soft-capping or scaling after the head, a head
that is not one ``nn.Linear`` such as a LoRA-wrapped head, FSDP-sharded head weights that
only the root module's forward gathers) keep the plain ``model(...).logits`` path.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from placerl.models.logprobs import log_probs_from_logits, token_log_probs

# config fields of architectures whose logits are not just head(hidden)
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")
_NOTED: set[str] = set()


def split_lm(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(decoder, head) such that ``head(decoder(...).last_hidden_state)`` are the model's
    logits, or None when that does not hold or cannot be told."""
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    head = get_head()
    if type(head) is not nn.Linear or type(head.weight) is not nn.Parameter:
        return None  # LoRA-wrapped, or a DTensor under FSDP
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    decoder = get_decoder()
    if decoder is None or decoder is model:
        return None
    return decoder, head


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each transformer block in backward instead of keeping its activations
    (non-reentrant ``torch.utils.checkpoint``, which composes with FSDP2 and LoRA)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def drops_kv_cache(model: nn.Module) -> bool:
    """Whether a forward of ``model`` now ignores its KV cache: Hugging Face layers under
    gradient checkpointing drop ``use_cache``/``cache`` in training mode with gradients on,
    so the shared-prompt forward (models/shared_prefix.py) would silently attend to nothing
    before the responses (measured log-prob error 0.126)."""
    if not (model.training and torch.is_grad_enabled()):
        return False
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def note_once(message: str) -> None:
    """Print ``message`` to stderr the first time it is asked for in this process."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"placerl: {message}", file=sys.stderr)


def selected_log_probs(model: nn.Module, positions: Tensor, targets: Tensor, **inputs) -> Tensor:
    """(T,) fp32 log p(targets) predicted at ``positions`` (flat indices into the forward's
    (N, W) positions) by ``model(**inputs)``: SFT's completion tokens, DPO's packed
    responses. Only those positions go through the LM head, in chunks (no (N, W, V) logits);
    a model ``split_lm`` cannot split takes its plain logits at those positions."""
    parts = split_lm(model)
    if parts is None:
        logits = model(**inputs, use_cache=False).logits.flatten(0, 1)[positions].float()
        return log_probs_from_logits(logits, targets)
    decoder, head = parts
    hidden = decoder(**inputs, use_cache=False).last_hidden_state.flatten(0, 1)[positions]
    log_probs, _ = token_log_probs(hidden, head.weight, head.bias, targets)
    return log_probs
