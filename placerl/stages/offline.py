"""What sft, rm and dpo share: the data on the controller, the trainer where the Plan puts it.

The controller holds the encoded examples and the seeded ``IndexStream`` (the run's data
position: two integers, so resume is exact). Each step it takes the next batch, deals it to
the trainer's ranks (``algos.offline.plan_step``: workload-balanced or contiguous shares,
every rank the same number of micro-batches, the batch's loss denominator counted here) and
sends each rank its share; the ranks' stats come back as sums. The trainer is one object in
this process (``placement.strategy: local``) or one per Ray worker, data-parallel with
replicas or FSDP2 (``runtime/ray/offline.py``); either way the stage reads the same.

Evaluation runs once (on the workers' rank 0, with the full weights) and export and
checkpoints read the controller's copy of the trained model, refreshed from the workers when
it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from placerl.algos.offline import Share, plan_step, sum_stats
from placerl.config.schema import RunConfig
from placerl.data.stream import IndexStream
from placerl.errors import UserError
from placerl.evaluation import Evaluation
from placerl.models.micro_batches import micro_batching
from placerl.runtime.offline import KINDS, Evaluator

REPLICATED = ("/grad_norm", "/lr")  # the same on every rank: rank 0's, not a sum


def combine(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """The step's stats from each rank's: sums, except the replicated values."""
    replicated = {k: v for k, v in per_rank[0].items() if k.endswith(REPLICATED)}
    return sum_stats([{k: v for k, v in s.items() if k not in replicated} for s in per_rank]) | (
        replicated
    )


def hidden_size(model) -> int:
    """The width the workload estimate weighs attention against (``data/balance.py``)."""
    return int(getattr(model.config, "hidden_size", None) or 1024)


@dataclass
class Trained:
    """The controller's copy of the trained model and its name in checkpoints and exports."""

    name: str  # policy, reward_model
    model: Any


def offline_runtime(cfg: RunConfig, trained: Trained, tokenizer, path: Path):
    """The trainer in this process (``local``), or on Ray workers as the Plan places it."""
    from placerl.models.device import resolve_device
    from placerl.placement.auto.plan import runs_in_process
    from placerl.runtime.offline import InProcess, OneProcess, build_trainer

    if runs_in_process(cfg):  # strategy local, or auto's pinned pick of the local plan
        device = resolve_device(cfg.placement.device)
        trainer = build_trainer(cfg, trained.model, tokenizer, path, device, OneProcess())
        return InProcess(trainer)
    from placerl.runtime.ray.offline import start_offline_workers

    return start_offline_workers(cfg, path, tokenizer, trained.model)


class OfflineStage:
    """A ``Stage`` over fixed examples (see the module docstring)."""

    def __init__(
        self,
        cfg: RunConfig,
        tokenizer,
        trained: Trained,
        examples: list,
        evaluator: Evaluator | None,
        path: Path,
    ):
        if not examples:
            what = "SFT" if cfg.stage == "sft" else "preference"
            raise UserError(f"the {what} dataset is empty", where="data.train")
        self.cfg, self.name, self.kind = cfg, cfg.stage, KINDS[cfg.stage]
        self.tokenizer, self.trained, self.examples = tokenizer, trained, examples
        self.evaluator = evaluator
        self.stream = IndexStream(len(examples), cfg.trainer.batch_size, seed=cfg.seed)
        self.hidden = hidden_size(trained.model)
        self.runtime = offline_runtime(cfg, trained, tokenizer, path)

    @property
    def model(self):
        """The controller's copy of the trained model (on Ray: refreshed by ``trained_models``)."""
        return self.trained.model

    def shares(self, indices: list[int]) -> list[Share]:
        examples = [self.examples[i] for i in indices]
        runtime, trainer = self.runtime, self.cfg.trainer
        return plan_step(
            self.kind,
            examples,
            runtime.world,
            micro_batching(self.cfg),
            balance=trainer.balance,
            hidden=self.hidden,
            lockstep=runtime.lockstep,
        )

    def step(self, step: int, timer) -> dict[str, float]:
        indices = self.stream.next_batch()
        shares = self.shares(indices)
        self.before_update(indices, shares, timer)
        with timer.phase("update"):
            per_rank = self.runtime.train(shares)
        timer.add_spans(self.runtime.pop_spans())
        return self.kind.metrics(combine(per_rank))

    def before_update(self, indices: list[int], shares: list[Share], timer) -> None:
        """What a stage adds to the shares before the update (dpo: reference sums)."""

    def evaluate(self) -> Evaluation:
        if self.evaluator is None:
            return Evaluation()
        metrics, samples = self.runtime.evaluate(self.evaluator)
        return Evaluation(metrics, samples)

    def trained_models(self) -> dict:
        self.runtime.pull_weights()
        return {self.trained.name: self.trained.model}

    def state_dict(self) -> dict:
        return {**self.runtime.state_dict(), "data": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.runtime.push_weights()  # the restored weights, to the workers (Ray)
        self.runtime.load_state_dict({k: state[k] for k in ("optimizer", "scheduler")})
        self.stream.load_state_dict(state["data"])

    def close(self) -> None:
        """Stop the workers (nothing to do in one process); called after failures too."""
        self.runtime.close()
