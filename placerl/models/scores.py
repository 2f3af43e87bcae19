"""Scores of a sequence-classification model (a reward model), read at each row's last token.

One definition for reward-model training (algos/reward_model.py), PPO scoring (roles/reward.py)
and evaluation.
"""

from __future__ import annotations

import torch


def last_attended(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last position with ``mask`` 1 (rows of any padding side)."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return (positions * (mask != 0)).argmax(dim=-1)


def sequence_scores(model, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
    """(B,) float scores of a one-label sequence-classification model, each read at its row's
    last attended token: the last response token, i.e. its end token when it has one.

    One definition for RM training, PPO scoring and evaluation. Hugging Face's heads pick the
    last token that is not ``pad_token_id`` instead, which moves with the pad choice (pad = an
    end token makes it skip the end token) and refuses batches when the config has no pad id;
    so the per-position scores are taken from the head as it runs (a forward hook, which keeps
    the model's own ``forward`` and so any wrapper around it) and indexed from the mask.
    """
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no 'score' head to read scores from")
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, _i, out: captured.append(out))
    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    had_pad = config.pad_token_id is not None
    if not had_pad:  # only to pass HF's batch check; its pooled output is not used
        config.pad_token_id = -1
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    finally:
        handle.remove()
        if not had_pad:
            config.pad_token_id = None
    per_token = captured[-1]  # (B, T, 1); a pooling head (BERT-like) gives (B, 1) itself
    if per_token.dim() == 2:
        return per_token[:, 0].float()
    rows = torch.arange(per_token.shape[0], device=per_token.device)
    return per_token[rows, last_attended(attention_mask).to(per_token.device), 0].float()
