"""Offline preference losses of the DPO family, on per-sequence log-probabilities.

Inputs are (B,) sums of token log-probs of the chosen (preferred) and rejected responses under
the policy and the frozen reference. With h = log π − log π_ref (the implicit reward / β) and

    logits = h_chosen − h_rejected = (π_c − ref_c) − (π_r − ref_r),

the losses follow TRL's ``DPOTrainer`` conventions (``loss_type`` sigmoid / hinge / ipo):

- sigmoid (DPO, Rafailov et al. 2023, eq. 7; conservative label smoothing ε of Mitchell 2023):
      −(1 − ε)·log σ(β·logits) − ε·log σ(−β·logits)
- hinge (SLiC-HF, Zhao et al. 2023, eq. 3, with the reference ratio as in TRL; δ = ``margin``,
  TRL's fixed value is δ = 1):
      relu(δ − β·logits)
- ipo (Azar et al. 2023, eq. 17):
      (logits − 1/(2β))²
  The IPO paper (and TRL) use *length-averaged* log-probs for IPO: pass
  ``sequence_log_probs(..., average=True)``. This module sums or averages as told.

Any of them can add SLiC-HF's regularizer toward the chosen response, λ·NLL(y_c | x) with the
NLL averaged over the chosen tokens (``sft_coef`` λ, ``chosen_nll``); SLiC's eq. 3 writes it
on reference targets, DPO-family trainers (TRL's ``rpo_alpha``) use the chosen response.
``LOSS_KINDS`` maps the config's loss names (dpo/slic/ipo) onto these kinds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PREFERENCE_KINDS = ("sigmoid", "hinge", "ipo")
LOSS_KINDS = {"dpo": "sigmoid", "slic": "hinge", "ipo": "ipo"}  # config name -> kind


def sequence_log_probs(
    token_log_probs: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T)
    average: bool = False,
) -> torch.Tensor:
    """Log-probability of each whole response: Σ_t log p(y_t | ·) over valid tokens; (B,).

    ``average=True`` divides by the number of valid tokens (IPO's length normalization).
    Padding is not read (``torch.where``, not multiplication).
    """
    valid = mask.bool()
    total = torch.where(valid, token_log_probs, token_log_probs.new_zeros(())).sum(-1)
    if average:
        total = total / valid.sum(-1).clamp(min=1).to(total.dtype)
    return total


def preference_loss(
    policy_chosen: torch.Tensor,  # (B,) log π(y_c | x)
    policy_rejected: torch.Tensor,  # (B,) log π(y_r | x)
    ref_chosen: torch.Tensor,  # (B,) log π_ref(y_c | x)
    ref_rejected: torch.Tensor,  # (B,) log π_ref(y_r | x)
    *,
    kind: str,
    beta: float,
    label_smoothing: float = 0.0,
    margin: float = 1.0,
    sft_coef: float = 0.0,
    chosen_nll: torch.Tensor | None = None,  # (B,) per-token NLL of y_c under π
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean preference loss over the batch, and stats (see the module docstring for formulas).

    Stats (detached, batch means): rewards_chosen = β·(π_c − ref_c), rewards_rejected =
    β·(π_r − ref_r), reward_accuracy = fraction with rewards_chosen > rewards_rejected, margin =
    rewards_chosen − rewards_rejected, and sft_nll when ``chosen_nll`` is given.
    ``label_smoothing`` only exists for "sigmoid", ``margin`` (δ) only for "hinge";
    ``sft_coef`` > 0 adds ``sft_coef · mean(chosen_nll)`` and needs ``chosen_nll``.
    """
    if kind != "sigmoid" and label_smoothing != 0.0:
        raise ValueError(f"label_smoothing={label_smoothing} is only defined for kind='sigmoid'")
    if kind != "hinge" and margin != 1.0:
        raise ValueError(f"margin={margin} is only defined for kind='hinge'")
    if sft_coef != 0.0 and chosen_nll is None:
        raise ValueError(f"sft_coef={sft_coef} needs chosen_nll, the NLL of the chosen responses")
    h_chosen = policy_chosen - ref_chosen  # (B,)
    h_rejected = policy_rejected - ref_rejected  # (B,)
    logits = h_chosen - h_rejected  # (B,)
    if kind == "sigmoid":
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * logits)
        losses = losses - label_smoothing * F.logsigmoid(-beta * logits)
    elif kind == "hinge":
        losses = torch.relu(margin - beta * logits)
    elif kind == "ipo":
        losses = (logits - 1.0 / (2.0 * beta)).square()
    else:
        raise ValueError(
            f"unknown preference loss kind={kind!r}; expected one of {PREFERENCE_KINDS}"
        )
    loss = losses.mean()
    if sft_coef != 0.0:
        loss = loss + sft_coef * chosen_nll.mean()
    with torch.no_grad():
        rewards_chosen = beta * h_chosen
        rewards_rejected = beta * h_rejected
        stats = {
            "rewards_chosen": rewards_chosen.mean(),
            "rewards_rejected": rewards_rejected.mean(),
            "reward_accuracy": (rewards_chosen > rewards_rejected).to(logits.dtype).mean(),
            "margin": (rewards_chosen - rewards_rejected).mean(),
        }
        if chosen_nll is not None:
            stats["sft_nll"] = chosen_nll.detach().mean()
    return loss, stats
