"""Non-finite values never reach the weights or a checkpoint.

One overflowing step (a learning rate far too high, a reward that is ``inf`` in float32)
turns every weight into NaN, and a run that goes on would rotate its good checkpoints away.
Three guards, each in one place:

- ``finite_step`` is the only way placerl takes an optimizer step: when the loss or the
  gradient norm is not finite it clears the gradients and skips the update (counted per
  process; the trainer reports the count as ``train/skipped_nonfinite``).
- ``BadStepCounter`` stops the run (``UserError``, exit 2) after ``trainer.max_bad_steps``
  consecutive trainer steps that skipped an update: the weights are unchanged by those steps,
  so the last checkpoint is as good as the run will get.
- ``non_finite_weights`` is checked before any checkpoint or export is written.

In a multi-process runtime the update happens in a worker, whose skip counter the driver
cannot read; a non-finite ``*/grad_norm`` metric coming back from it counts as one skip.
"""

from __future__ import annotations

import math

import torch

from placerl.errors import UserError

_skipped = 0  # optimizer updates skipped in this process since the last ``pop_skipped``


def finite_step(params: list, optimizer, grad_clip: float | None, loss=None) -> float:
    """Clip, then step only if the loss and the gradient norm are finite; always clears the
    gradients. Returns the pre-clip gradient norm (NaN/inf when the step was skipped)."""
    global _skipped
    limit = grad_clip if grad_clip else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(params, limit)) if params else 0.0
    loss_ok = loss is None or bool(torch.isfinite(torch.as_tensor(loss).detach()).all())
    if math.isfinite(norm) and loss_ok:
        optimizer.step()
    else:
        _skipped += 1
        norm = norm if not math.isfinite(norm) else float("nan")
    optimizer.zero_grad(set_to_none=True)
    return norm


def pop_skipped() -> int:
    """Updates skipped in this process since the last call (and reset the count)."""
    global _skipped
    count, _skipped = _skipped, 0
    return count


def skipped_in_step(metrics: dict) -> int:
    """Skipped updates of one trainer step: this process's count, or at least one when a
    worker reported a non-finite gradient norm."""
    local = pop_skipped()
    remote = any(
        key.endswith("grad_norm") and isinstance(value, float) and not math.isfinite(value)
        for key, value in metrics.items()
    )
    return max(local, int(remote))


class BadStepCounter:
    """Counts consecutive trainer steps with a skipped update; raises at ``limit``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.run = 0
        self.first = 0

    def update(self, step: int, skipped: int, last_checkpoint: str | None) -> None:
        if not skipped:
            self.run = 0
            return
        self.run += 1
        self.first = self.first if self.run > 1 else step
        if self.run >= self.limit:
            latest = f"latest {last_checkpoint}" if last_checkpoint else "none written yet"
            raise UserError(
                f"steps {self.first}-{step}: {self.run} consecutive steps had a non-finite loss "
                "or gradient norm, so their updates were skipped; stopping. Checkpoints are only "
                f"written from finite weights ({latest}). Lower optim.lr, check the rewards and "
                "data, or raise trainer.max_bad_steps",
                where="trainer.max_bad_steps",
            )


def non_finite_weights(models: dict) -> list[str]:
    """``model.tensor`` names of floating-point weights holding NaN or inf."""
    bad = []
    for name, model in models.items():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad.append(f"{name}.{key}")
    return bad


def require_finite_weights(models: dict, step: int, what: str) -> None:
    """Refuse to write ``what`` (a checkpoint, an export) from non-finite weights."""
    bad = non_finite_weights(models)
    if bad:
        raise UserError(
            f"step {step}: {len(bad)} weight tensors are not finite (e.g. {', '.join(bad[:3])}); "
            f"the {what} is not written and earlier checkpoints are kept. Lower optim.lr or "
            "check the rewards and data",
            where="weights",
        )
