"""Training helpers that the roles and the offline algorithms share: the optimizer and its
schedule, and one clipped, guarded optimizer step."""

from __future__ import annotations

import math

import torch

from placerl.config.schema import OptimConfig
from placerl.numerics import finite_step


def make_optimizer(
    params, cfg: OptimConfig, total_steps: int, lr: float | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warm-up then constant, linear or cosine decay to min_lr_ratio·lr."""
    optimizer = torch.optim.AdamW(
        [p for p in params if p.requires_grad],
        lr=lr or cfg.lr,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        fused=True,  # one kernel per step: ~4x faster than foreach on CPU, same math
    )

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        shape = (
            1 - progress if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        )
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_and_step(model, optimizer, grad_clip: float | None, loss=None) -> float:
    """Clip gradients, step (skipped when non-finite: placerl/numerics.py), clear gradients;
    returns the pre-clip norm."""
    params = [p for p in model.parameters() if p.grad is not None]
    return finite_step(params, optimizer, grad_clip, loss)
