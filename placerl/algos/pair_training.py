"""Training on preference pairs drawn from sampled responses (online DPO, RSO).

A step samples responses, picks (chosen, rejected) pairs among them by reward, and only then
asks the reference for log-probs — of the paired responses alone, not of every sample. The
pairs form a [M, 2] batch (index 0 chosen, 1 rejected) so minibatches never split a pair, and
the actor minimises a ``PairObjective``, the DPO-family loss of ``algos/preference.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from placerl.algos.online import Roles
from placerl.algos.preference import LOSS_KINDS, preference_loss, sequence_log_probs
from placerl.config.preference import PreferenceConfig
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field


@dataclass(frozen=True)
class Pairs:
    """Preference pairs as row indices of a sampled batch; ties were compared and left out."""

    chosen: Tensor  # (M,) int64
    rejected: Tensor  # (M,) int64
    ties: int = 0

    def __len__(self) -> int:
        return int(self.chosen.numel())


def label_pairs(games: list[tuple[int, int]], scores: Tensor) -> Pairs:
    """Label each compared (a, b) by reward: the higher is chosen; equal rewards are ties."""
    labelled, values = [], scores.tolist()
    for a, b in games:
        if values[a] != values[b]:
            labelled.append((a, b) if values[a] > values[b] else (b, a))
    index = torch.tensor(labelled, dtype=torch.long).reshape(-1, 2)
    return Pairs(index[:, 0], index[:, 1], ties=len(games) - len(labelled))


@dataclass(frozen=True)
class PairObjective:
    """The preference loss of a [M, 2] pair batch given the policy's (M, 2, R) log-probs.

    A frozen dataclass, so a remote actor can receive it; ``average`` uses per-token mean
    log-probs (IPO's length normalization), otherwise sums.

    ``temperature`` is the one the policy's and the reference's log-probs are taken at: 1,
    whatever ``rollout.temperature`` sampled the pairs. The DPO, IPO and SLiC objectives (and
    RSO's, which trains with them) are stated on π and π_ref themselves; the sampling
    temperature only decides which responses get compared. (At the sampling temperature
    the loss would train softmax(z/T) toward the preferences, a different policy than the
    one exported and evaluated.)
    """

    kind: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    margin: float = 1.0
    sft_coef: float = 0.0
    average: bool = False
    temperature: float | None = 1.0  # None: the sampling temperature (GroupedObjective)

    def __call__(self, log_probs: Tensor, mb: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        mask = mb[Field.RESPONSE_MASK]  # (M, 2, R)
        policy = sequence_log_probs(log_probs, mask, self.average)  # (M, 2)
        ref = sequence_log_probs(mb[Field.REF_LOG_PROBS], mask, self.average)
        nll = None
        if self.sft_coef:  # per-token NLL of the chosen response
            nll = -sequence_log_probs(log_probs[:, 0], mask[:, 0], average=True)
        loss, stats = preference_loss(
            policy[:, 0],
            policy[:, 1],
            ref[:, 0],
            ref[:, 1],
            kind=self.kind,
            beta=self.beta,
            label_smoothing=self.label_smoothing,
            margin=self.margin,
            sft_coef=self.sft_coef,
            chosen_nll=nll,
        )
        stats = {f"preference/{k}": v for k, v in stats.items()}
        stats["loss/preference"] = loss.detach()
        return loss, stats


def pair_objective(cfg: PreferenceConfig) -> PairObjective:
    return PairObjective(
        kind=LOSS_KINDS[cfg.loss],
        beta=cfg.beta,
        label_smoothing=cfg.label_smoothing,
        margin=cfg.margin,
        sft_coef=cfg.sft_coef,
        average=cfg.loss == "ipo",
    )


def pair_batch(batch: Batch, pairs: Pairs) -> Batch:
    """[M, 2] batch of the paired rows: [:, 0] chosen, [:, 1] rejected."""
    return torch.stack([batch[pairs.chosen], batch[pairs.rejected]], dim=1)


def pair_metrics(batch: Batch, pairs: Pairs) -> dict[str, float]:
    scores = batch[Field.SCORES]
    gap = scores[pairs.chosen] - scores[pairs.rejected]
    return {
        "pairs/count": float(len(pairs)),
        "pairs/ties": float(pairs.ties),
        "pairs/reward_gap": float(gap.mean()) if len(pairs) else 0.0,
    }


def train_on_pairs(
    roles: Roles,
    batch: Batch,
    pairs: Pairs,
    objective: PairObjective,
    timer: PhaseTimer,
    epochs: int = 1,
    minibatches: int = 1,
) -> dict[str, float]:
    """reference log-probs of the pairs → actor update. With no pairs (every comparison a
    tie) the update runs on nothing: no optimizer step, but the schedule still advances once
    per step."""
    paired = pair_batch(batch, pairs)
    if len(pairs) and roles.reference is not None:
        with timer.phase("reference"):
            ref = roles.reference.log_probs(paired.reshape(-1), objective.temperature)
            paired[Field.REF_LOG_PROBS] = ref.view(*paired.batch_size, -1)
    with timer.phase("update"), warnings.catch_warnings():
        if not len(pairs):  # the schedule steps with no optimizer step: torch would warn
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
        return roles.actor.fit_grouped(paired, objective, epochs, minibatches)
