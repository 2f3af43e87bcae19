"""The offline algorithms' step (sft, rm, dpo), cut so that any number of ranks can share it.

One optimizer step over a batch of examples is

    accumulate(share)   on every rank: forward/backward of its micro-batches; stats as sums
    (the runtime averages the gradients over the ranks: replicas, or FSDP's reduce-scatter)
    apply(loss)         the clipped optimizer step and the schedule: grad norm and lr
    kind.metrics(Σ)     the step's metrics from the stats summed over the ranks

``Share.total`` is the loss denominator of the *whole* batch (completion tokens for SFT, pairs
for RM and DPO), counted by the controller before any forward: every micro-batch's summed
loss is divided by it, on whatever rank, so the gradient is that of one forward over the batch
(torchtitan's global-token normaliser, across micro-batches and ranks). ``Share.scale`` is the
number of ranks whose gradients are averaged: each rank's loss is multiplied by it, so that
the average is the sum. Stats come back already divided by ``total`` (means, once summed) or
as counts; ``kind.metrics`` turns counts into ratios. One process is the case of one rank.

A micro-batch with no examples (``[]``) runs a zero-weighted forward and backward on the
share's first example: under FSDP every rank gathers the weights in every forward, so every
rank must run as many (``data/balance.py`` deals the batch so that they do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

from placerl.data.balance import Unit, deal, workload
from placerl.models.micro_batches import MicroBatching


@dataclass
class Share:
    """One rank's part of a step (in one process: the whole batch)."""

    examples: list  # this rank's examples; one filler example when it has none
    parts: list[list[int]]  # micro-batches as indices into ``examples``; [] runs empty
    total: float  # the loss denominator of the whole batch, over all ranks
    scale: float = 1.0  # ranks whose gradients are averaged
    positions: list[int] = field(default_factory=list)  # batch positions of ``examples``
    reference: Tensor | None = None  # dpo: (n, 2) reference sums, NaN where to compute them
    reference_pass: bool = False  # dpo: some rank computes reference sums this step
    lockstep: bool = False  # every rank must run the same forwards (FSDP-sharded models)

    def micro_batch(self, part: list[int]) -> list:
        """The examples of ``part``; the first example for an empty part (weighted 0)."""
        return [self.examples[i] for i in part] if part else self.examples[:1]

    def weight(self, count: float) -> float:
        """The loss multiplier of a micro-batch whose summed loss covers ``count`` of
        ``total``: count · scale / total (0 for an empty part)."""
        return count / self.total * self.scale if self.total else 0.0


class OfflineAlgorithm(Protocol):
    """What a rank (or the one process) runs: sft, rm and dpo each satisfy it."""

    model: Any
    optimizer: Any
    scheduler: Any

    def accumulate(self, share: Share) -> dict[str, float]:
        """Forward/backward of the share's micro-batches (gradients accumulate in ``.grad``);
        its stats as sums (see the module docstring)."""
        ...

    def apply(self, loss: float | None = None) -> dict[str, float]:
        """The clipped optimizer step (skipped when ``loss`` or the gradient is not finite)
        and the schedule's step; ``{prefix/grad_norm, prefix/lr}``."""
        ...


@dataclass(frozen=True)
class OfflineKind:
    """What the controller knows of an offline algorithm without a model: how big each
    example is, what the loss divides by, and how summed stats become metrics."""

    name: str
    loss_key: str
    lengths: Callable[[Any], list[int]]  # real tokens of each sequence of an example
    tokens: Callable[[Any], int]  # the tokens a micro-batch limit counts for it
    total: Callable[[Sequence], float]  # the loss denominator of a batch
    metrics: Callable[[dict[str, float]], dict[str, float]]

    def unit(self, example, hidden: int) -> Unit:
        lengths = self.lengths(example)
        return Unit(self.tokens(example), len(lengths), workload(lengths, hidden))


def plan_step(
    kind: OfflineKind,
    examples: Sequence,
    world: int,
    spec: MicroBatching,
    balance: str = "tokens",
    hidden: int = 1,
    lockstep: bool = False,
) -> list[Share]:
    """Each rank's share of a batch (``data/balance.deal``), with the batch's denominator."""
    units = [kind.unit(e, hidden) for e in examples]
    total = float(kind.total(examples))
    shares = []
    for dealt in deal(units, world, spec, balance):
        local = {pos: j for j, pos in enumerate(dealt.units)}
        mine = [examples[i] for i in dealt.units] or [examples[0]]
        parts = [[local[i] for i in part] for part in dealt.parts]
        shares.append(Share(mine, parts, total, float(world), dealt.units, lockstep=lockstep))
    return shares


def sum_stats(per_rank: Sequence[dict[str, float]]) -> dict[str, float]:
    """Stats summed over ranks (a key only some ranks report is summed over those)."""
    out: dict[str, float] = {}
    for stats in per_rank:
        for key, value in stats.items():
            out[key] = out.get(key, 0.0) + value
    return out


def one_process_step(algo: OfflineAlgorithm, kind: OfflineKind, share: Share) -> dict:
    """accumulate → apply → metrics in this process (the whole batch as one share)."""
    sums = algo.accumulate(share)
    return kind.metrics(sums | algo.apply(sums.get(kind.loss_key)))


def in_order_share(kind: OfflineKind, examples: Sequence, spec: MicroBatching) -> Share:
    """The whole batch as one share, cut in order (what one process did before balancing)."""
    return plan_step(kind, examples, 1, spec, balance="none")[0]
