"""The experience pipeline: the one path every online algorithm runs through.

A step samples a batch, runs the algorithm's ``experience`` (scores, reference, values: what
only reads the models) and its ``learn`` (advantages, pairs or weights, updates). Sampling is
the pipeline's: with ``max_staleness: 0`` it samples with the current policy and runs the
three back to back — synchronous on-policy training. With ``max_staleness >= 1`` the rollout
samples with its own copy of the policy (a shadow in this process, rollout workers on Ray) and
the pipeline keeps one batch in flight:

    step k:  await sample k ─ sync weights if due ─ launch sample k+1 ─ experience k ─ learn k

(or ``await k ─ experience k ─ sync ─ launch k+1 ─ learn k`` when the experience calls a role
on the rollout's own workers: on Ray that call would queue behind the sample launched ahead,
``Runtime.experience_shares_rollout_workers``). A frozen proposal (``Needs.proposal:
initial``: RSO, BRAIn with ``proposal: sft``) is a rollout copy that is never synced.

Only *sampling* runs ahead. Scores, reference log-probs and critic values are computed when
the batch is learnt, by ``experience`` on the sampled batch: the critic reads its current
weights, and nothing but the rollout copy runs concurrently with training.

Policy versions count updates (the version after step k is k+1). Sample k+1 is drawn with the
rollout copy's version w and learnt at version k+1, so its staleness is k+1−w. A sync happens
every ``staleness.sync_every`` updates (null: never on a schedule), and is forced whenever
waiting would let a batch exceed ``max_staleness``; so ``max_staleness >= trainer.steps``
with no schedule samples with the first policy throughout (offline). Each batch is tagged with
its staleness (Field.STALENESS, metric ``pipeline/staleness``).

Which π_old the update gets is the algorithm's declaration (``Needs.old_log_probs``). A stale
batch (or every batch with ``recompute_log_probs: always``) keeps the sampler's log-probs as
ROLLOUT_LOG_PROBS; ``trainer``: OLD_LOG_PROBS are recomputed by the trainer, and the loss
applies truncated importance weights (``core.truncated_importance_weights``, cap
``staleness.is_cap``); ``update``: a single-pass update takes π_old from its own forward
(``PolicyObjective.old_from_current``), sparing a forward pass, with the same gradient;
``sampler``: nothing is recomputed (preference losses; BRAIn's proposal q is the sampler).

After every sync the sync guard checks the first batch sampled with the new weights
(runtime/sync/guard.py).

Resume is exact: a checkpoint *drains* the pipeline — it waits for the sample in flight and
stores it (a few tensors and its prompts) with the versions, plus the rollout copy's weights
when they lag the trainer's and no sync will refresh them before their next use. Because a
sample is launched one step ahead, a run also samples one batch past its last step; it is in
the final checkpoint, so extending a run is exact too.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tensordict import TensorDict

from placerl.algos.online import Algorithm, Pending, Roles
from placerl.config.staleness import StalenessConfig
from placerl.data.stream import PromptBatch
from placerl.rollout.episodes.metrics import batch_metrics
from placerl.runtime.launch import InlineLauncher, Launcher
from placerl.runtime.sync import RolloutSync
from placerl.runtime.sync.guard import check_gap, log_prob_gap
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field


@dataclass(frozen=True)
class SyncSchedule:
    """Sync trainer → rollout once the rollout copy is ``every`` updates behind (None: never on
    a schedule; the pipeline still forces a sync rather than exceed ``max_staleness``)."""

    every: int | None = None

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValueError(f"sync_every={self.every}: expected an integer >= 1")

    def due(self, trainer_version: int, rollout_version: int) -> bool:
        return self.every is not None and trainer_version - rollout_version >= self.every


@dataclass
class _InFlight:
    index: int  # the step that will learn on it
    version: int  # policy version of the weights it was sampled with
    prompts: PromptBatch
    sample: Pending  # -> the sampled Batch
    synced: bool = False  # launched right after a sync: the sync guard checks it


class ExperiencePipeline:
    """Runs an online algorithm step by step, sampling ahead when allowed (module doc)."""

    def __init__(
        self,
        algorithm: Algorithm,
        roles: Roles,
        next_prompts: Callable[[], PromptBatch],
        *,
        max_staleness: int = 0,
        staleness: StalenessConfig | None = None,
        syncer: RolloutSync | None = None,
        launcher: Launcher | None = None,
        launch_first: bool = True,
    ):
        if max_staleness < 0:
            raise ValueError(f"max_staleness={max_staleness}: expected an integer >= 0")
        if max_staleness > 0 and syncer is None:
            raise ValueError("max_staleness >= 1 needs a rollout copy apart from the trainer")
        self.algorithm, self.roles, self.next_prompts = algorithm, roles, next_prompts
        self.frozen = algorithm.needs.proposal == "initial"
        if self.frozen and syncer is None:
            raise ValueError("a frozen proposal needs a rollout copy apart from the trainer")
        self.max_staleness = max_staleness
        self.cfg = staleness or StalenessConfig()
        self.schedule = SyncSchedule(self.cfg.sync_every)
        self.syncer = syncer
        self.launcher = launcher or InlineLauncher()
        self.ahead = 1 if max_staleness > 0 else 0  # samples launched before learning
        self.launch_first = launch_first
        self.version = 0  # policy updates done by the trainer
        self.rollout_version = 0  # version of the weights the rollout samples with
        self.in_flight: _InFlight | None = None

    # ------------------------------------------------------------------ the step

    def step(self, index: int, timer: PhaseTimer) -> dict[str, float]:
        """Learn on batch ``index`` (launching the next sample first when running ahead)."""
        if index != self.version:
            raise RuntimeError(f"pipeline is at policy version {self.version}, asked for {index}")
        metrics: dict[str, float] = {}
        if self.in_flight is None:
            metrics |= self._launch(index, timer)
        flight, sampled = self._collect(timer, metrics)
        metrics |= batch_metrics(sampled)  # env/… of a batch of episodes
        if self.ahead and self.launch_first:
            metrics |= self._launch(index + 1, timer)
        batch = self.algorithm.experience(self.roles, sampled, flight.prompts, timer)
        if self.ahead and not self.launch_first:
            metrics |= self._launch(index + 1, timer)
        staleness = flight.index - flight.version
        metrics |= self._prepare(batch, staleness, flight.synced, timer, index)
        metrics |= self.algorithm.learn(self.roles, batch, timer, index)
        self.version += 1
        metrics["pipeline/staleness"] = float(staleness)
        return metrics

    def _launch(self, index: int, timer: PhaseTimer) -> dict[str, float]:
        metrics: dict[str, float] = {}
        synced = self._must_sync(index)
        if synced:
            with timer.phase("sync"):
                metrics = self.syncer.sync().metrics()
            self.rollout_version = self.version
        elif self.syncer is None:  # the rollout reads the trainer's own weights
            self.rollout_version = self.version
        prompts = self.next_prompts()
        sample = self.launcher.launch(self.roles.rollout, prompts, timer)
        self.in_flight = _InFlight(index, self.rollout_version, prompts, sample, synced)
        return metrics

    def _must_sync(self, index: int) -> bool:
        """Sync before launching sample ``index``: on schedule, or when it would be too stale."""
        if self.syncer is None or self.frozen or self.rollout_version == self.version:
            return False
        too_stale = index - self.rollout_version > self.max_staleness
        return too_stale or self.schedule.due(self.version, self.rollout_version)

    def _collect(self, timer: PhaseTimer, metrics: dict[str, float]) -> tuple[_InFlight, Batch]:
        flight, self.in_flight = self.in_flight, None
        with timer.phase("wait_rollout"):
            sampled = flight.sample.result()
        ahead = self.launcher.timer
        if ahead is not None:  # a background thread's phases, as overlapped time
            timer.add_spans(ahead.pop_spans())
            for key, seconds in ahead.pop().items():
                if key != "time/step":
                    metrics[key.replace("time/", "time/ahead/", 1)] = seconds
        stale = flight.index - flight.version
        if not 0 <= stale <= self.max_staleness and not self.frozen:  # an invariant
            raise RuntimeError(f"sample {flight.index} is {stale} stale")
        return flight, sampled

    def _prepare(
        self, batch: Batch, staleness: int, synced: bool, timer: PhaseTimer, index: int
    ) -> dict[str, float]:
        """Tag staleness; π_old as the algorithm declares (module doc); the sync guard."""
        batch[Field.STALENESS] = torch.full((batch.batch_size[0],), staleness, dtype=torch.long)
        sampler, trainer = batch[Field.OLD_LOG_PROBS], None
        mode = self.algorithm.needs.old_log_probs
        if mode != "sampler" and (staleness > 0 or self.cfg.recompute_log_probs == "always"):
            batch[Field.ROLLOUT_LOG_PROBS] = sampler
            if mode == "trainer":
                with timer.phase("old_log_probs"):
                    batch[Field.OLD_LOG_PROBS] = trainer = self.roles.actor.log_probs(batch)
        if not synced:
            return {}
        if trainer is None:  # π_old not needed by the update: one forward for the guard
            with timer.phase("sync_guard"):
                trainer = self.roles.actor.log_probs(batch)
        gap = log_prob_gap(batch, trainer, sampler)
        check_gap(gap, index + 1)
        return {"sync/log_prob_gap": gap}

    # ----------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        """Drains the pipeline: waits for the sample in flight and stores it (module doc)."""
        state: dict[str, Any] = {
            "version": self.version,
            "rollout_version": self.rollout_version,
            "in_flight": None,
            "rollout_weights": None,
        }
        flight = self.in_flight
        if flight is not None:
            sampled = flight.sample.result()
            state["in_flight"] = {
                "index": flight.index,
                "version": flight.version,
                "prompts": asdict(flight.prompts),
                "size": sampled.batch_size[0],
                "batch": sampled.to_dict(),
                "synced": flight.synced,
            }
        next_launch = flight.index + 1 if flight is not None else self.version
        if self._lags() and not self._must_sync(next_launch):
            state["rollout_weights"] = self.syncer.rollout_state()
        return state

    def _lags(self) -> bool:
        """The rollout copy holds weights other than the trainer's and the initial ones."""
        return self.syncer is not None and not self.frozen and self.rollout_version != self.version

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:  # a checkpoint from before the pipeline: nothing was in flight
            return
        self.version, self.rollout_version = state["version"], state["rollout_version"]
        self.in_flight = None
        if state["in_flight"] is not None:
            saved = state["in_flight"]
            sample: Future = Future()
            sample.set_result(TensorDict(saved["batch"], batch_size=[saved["size"]]))
            prompts = PromptBatch(**saved["prompts"])
            synced = saved.get("synced", False)
            self.in_flight = _InFlight(saved["index"], saved["version"], prompts, sample, synced)
        if state["rollout_weights"] is not None:
            self.syncer.load_rollout_state(state["rollout_weights"])
        elif self.syncer is not None and not self.frozen and not self._lags():
            self.syncer.sync()  # the copy was built from the initial weights: refresh it

    def close(self) -> None:
        self.launcher.close()


def staleness_config(cfg: Any, engine: bool = False) -> StalenessConfig:
    """The run's ``staleness:`` section, ``recompute_log_probs`` resolved: ``always`` when an
    engine samples (its log-probs are μ, never π_old) or, for ``auto``, under bf16 (π_old in
    the precision of the update's forward); else ``stale``."""
    staleness, mode = cfg.staleness, cfg.staleness.recompute_log_probs
    if engine or (mode == "auto" and cfg.model.precision == "bf16"):
        mode = "always"
    elif mode == "auto":
        mode = "stale"
    return staleness.model_copy(update={"recompute_log_probs": mode})


def build_pipeline(cfg: Any, algorithm: Algorithm, runtime, next_prompts) -> ExperiencePipeline:
    """The pipeline over ``runtime``: staleness from its Plan, the rollout's sync and launcher
    as the runtime decided them when it was built."""
    return ExperiencePipeline(
        algorithm,
        runtime.roles,
        next_prompts,
        max_staleness=runtime.plan.max_staleness,
        staleness=staleness_config(cfg, runtime.setup.engine),
        syncer=runtime.rollout_sync(),
        launcher=runtime.launcher,
        launch_first=not runtime.experience_shares_rollout_workers,
    )
