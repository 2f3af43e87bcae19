"""The experience pipeline: sampling of batch k+1 while the trainer learns on batch k.

An online algorithm's step is ``experience`` (generate, score, reference, values) then
``learn`` (advantages, updates). With ``max_staleness: 0`` the pipeline runs them back to back
on the current policy: synchronous on-policy training, bit for bit the algorithm's ``step``.
With ``max_staleness >= 1`` the rollout samples with its own copy of the policy (a shadow in
this process, or rollout workers under Separate) and the pipeline keeps one batch in flight:

    step k:  await sample k ─ sync weights if due ─ launch sample k+1 ─ experience k ─ learn k

(or ``await k ─ experience k ─ sync ─ launch k+1 ─ learn k`` when the experience calls a role
on the rollout's own workers, e.g. a rule reward placed with the rollout: on Ray that call
would queue behind the sample launched ahead, and training would wait for it; see
``launch_first``.)

Only *sampling* runs ahead. Scores, reference log-probs and critic values are computed when
the batch is learnt, by ``experience`` on the sampled batch, "between generation and update"
(the Separate plan puts those models with the trainer): the critic reads its current weights
(it trains meanwhile; reading it concurrently would be a race), and nothing but the rollout
copy runs concurrently with training, so no worker serves two callers at once.

Policy versions count updates (the version after step k is k+1). Sample k+1 is drawn with the
rollout copy's version w and learnt at version k+1, so its staleness is k+1−w: 1 when weights
go to the rollout after every update, up to ``sync_every`` otherwise; a sync is forced whenever
waiting would let a batch exceed ``max_staleness``. Each batch is tagged with its staleness
(Field.STALENESS, metric ``pipeline/staleness``). A stale batch keeps the sampler's log-probs as
ROLLOUT_LOG_PROBS and gets OLD_LOG_PROBS recomputed by the trainer, so the PPO ratio is taken
against the trainer's policy and the loss applies truncated importance weights
(``core.truncated_importance_weights``, cap ``staleness.is_cap``). When the update is a single
pass (1 epoch × 1 minibatch: the algorithm's ``old_log_probs_in_update``), π_old *is* the
policy of the update's own forward, so the loss takes it from there, detached
(``PolicyObjective.old_from_current``), and the trainer is spared a forward pass; the same
gradient, since the ratio is 1 at that forward either way. OLD_LOG_PROBS then stays the
sampler's (metrics such as ``kl/mean`` describe the behaviour policy).

How a sample is launched: a remote rollout (``generate_async``, Ray) starts at once and
overlaps by itself. A local one goes through a launcher: ``InlineLauncher`` samples at once
(the default: exactly the staleness semantics of an overlapped run, without the overlap);
``ThreadLauncher`` samples on a background thread, which overlaps only where the GIL is
released (inside torch kernels): in one CPU process both halves compete for the same cores.
Both give bitwise the same training (tested): the rollout copy and its generator are touched
by nothing else, and syncs happen only while nothing is in flight.

Resume is exact: a checkpoint *drains* the pipeline — it waits for the sample in flight and
stores it (a few tensors and its prompts) with the versions, plus the rollout copy's weights
when they lag the trainer's and no sync will refresh them before their next use (only with
``sync_every`` > 1). Because a sample is always launched one step ahead, a run also samples one
batch past its last step; it is in the final checkpoint, so extending a run is exact too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import torch
from tensordict import TensorDict

from placerl.algos.rollout_phase import Roles
from placerl.config.staleness import StalenessConfig
from placerl.data.stream import PromptBatch
from placerl.errors import UserError
from placerl.models.lora import sync_view
from placerl.runtime.weight_sync import SyncSchedule, SyncStats, copy_weights
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field

# ----------------------------------------------------------------------------- launchers


class Launcher(Protocol):
    concurrent: bool  # True: the call runs while the caller goes on (needs its own timer)

    def submit(self, fn: Callable[[], Batch]) -> Future: ...

    def close(self) -> None: ...


class InlineLauncher:
    """Runs the experience at once, in the caller's thread; a finished future."""

    concurrent = False

    def submit(self, fn: Callable[[], Batch]) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn())
        except BaseException as err:  # re-raised by result(), where the batch is awaited
            future.set_exception(err)
        return future

    def close(self) -> None:
        pass


class ThreadLauncher:
    """Runs the experience on one background thread (see the module doc on the GIL)."""

    concurrent = True

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="placerl-rollout")

    def submit(self, fn: Callable[[], Batch]) -> Future:
        return self._pool.submit(fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# ------------------------------------------------------------------------- rollout copies


class WeightSyncer(Protocol):
    """Moves the trainer's weights to the rollout copy, and saves/restores that copy."""

    def sync(self) -> SyncStats: ...

    def rollout_state(self) -> dict[str, torch.Tensor]: ...

    def load_rollout_state(self, state: dict[str, torch.Tensor]) -> None: ...


class LocalShadow:
    """Separate in one process: the rollout samples with its own copy of the policy."""

    def __init__(self, trainer_model: torch.nn.Module, shadow_model: torch.nn.Module):
        self.trainer_model, self.shadow_model = trainer_model, shadow_model

    def sync(self) -> SyncStats:
        return copy_weights(sync_view(self.trainer_model), sync_view(self.shadow_model))

    def rollout_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.shadow_model.state_dict().items()}

    def load_rollout_state(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow_model.load_state_dict(state)


def with_local_shadow(roles: Roles) -> tuple[Roles, LocalShadow]:
    """Roles whose rollout samples with a frozen copy of the actor's current weights.

    The copy keeps the rollout's tokenizer, sampling parameters and generator (the original
    rollout, which shared the actor's module, is not used any more).
    """
    shadow_model = copy.deepcopy(roles.actor.model).requires_grad_(False)
    rollout = copy.copy(roles.rollout)
    rollout.model = shadow_model
    return replace(roles, rollout=rollout), LocalShadow(roles.actor.model, shadow_model)


# ------------------------------------------------------------------------------ pipeline


@dataclass
class _InFlight:
    index: int  # the step that will learn on it
    version: int  # policy version of the weights it was sampled with
    prompts: PromptBatch
    sample: Any  # anything with .result() -> the sampled Batch


class _Sampled:
    """A rollout stand-in whose ``generate`` hands back the batch sampled ahead."""

    def __init__(self, batch: Batch):
        self.batch = batch

    def generate(self, prompt_ids, prompt_mask, params=None) -> Batch:
        return self.batch


class ExperiencePipeline:
    """Runs an online algorithm step by step with sampling launched ahead (module doc)."""

    def __init__(
        self,
        algorithm: Any,
        roles: Roles,
        next_prompts: Callable[[], PromptBatch],
        *,
        max_staleness: int = 0,
        staleness: StalenessConfig | None = None,
        syncer: WeightSyncer | None = None,
        launcher: Launcher | None = None,
        launch_first: bool = True,
    ):
        if max_staleness < 0:
            raise ValueError(f"max_staleness={max_staleness}: expected an integer >= 0")
        if max_staleness > 0 and syncer is None:
            raise ValueError("max_staleness >= 1 needs a rollout copy apart from the trainer")
        self.algorithm, self.roles, self.next_prompts = algorithm, roles, next_prompts
        self.max_staleness = max_staleness
        self.cfg = staleness or StalenessConfig()
        self.schedule = SyncSchedule(self.cfg.sync_every)
        self.syncer = syncer
        self.launcher = launcher or InlineLauncher()
        self.ahead = 1 if max_staleness > 0 else 0  # samples launched before learning
        # launch the next sample before this batch's experience (overlapping both it and the
        # update), or after it (overlapping the update only; see the module doc)
        self.launch_first = launch_first
        self.version = 0  # policy updates done by the trainer
        self.rollout_version = 0  # version of the weights the rollout samples with
        self.in_flight: _InFlight | None = None
        self._ahead_timer = PhaseTimer(worker="rollout")

    # ------------------------------------------------------------------ the step

    def step(self, index: int, timer: PhaseTimer) -> dict[str, float]:
        """Learn on batch ``index`` (launching the next sample first when running ahead)."""
        if index != self.version:
            raise RuntimeError(f"pipeline is at policy version {self.version}, asked for {index}")
        metrics: dict[str, float] = {}
        if self.in_flight is None:
            metrics |= self._launch(index, timer)
        flight, sampled = self._collect(timer, metrics)
        if self.ahead and self.launch_first:
            metrics |= self._launch(index + 1, timer)
        roles = replace(self.roles, rollout=_Sampled(sampled))
        batch = self.algorithm.experience(roles, flight.prompts, timer)
        if self.ahead and not self.launch_first:
            metrics |= self._launch(index + 1, timer)
        staleness = flight.index - flight.version
        self._prepare(batch, staleness, timer)
        metrics |= self.algorithm.learn(self.roles, batch, timer, index)
        self.version += 1
        metrics["pipeline/staleness"] = float(staleness)
        return metrics

    def _launch(self, index: int, timer: PhaseTimer) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self._must_sync(index):
            with timer.phase("sync"):
                metrics = self.syncer.sync().metrics()
            self.rollout_version = self.version
        elif self.syncer is None:  # the rollout reads the trainer's own weights
            self.rollout_version = self.version
        prompts = self.next_prompts()
        rollout = self.roles.rollout
        if hasattr(rollout, "generate_async"):  # remote workers: running from now on
            sample = rollout.generate_async(prompts.ids, prompts.mask)
        else:
            run_timer = self._ahead_timer if self.launcher.concurrent else timer
            sample = self.launcher.submit(lambda: _generate(rollout, prompts, run_timer))
        self.in_flight = _InFlight(index, self.rollout_version, prompts, sample)
        return metrics

    def _must_sync(self, index: int) -> bool:
        """Sync before launching sample ``index``: on schedule, or when it would be too stale."""
        if self.syncer is None or self.rollout_version == self.version:
            return False
        too_stale = index - self.rollout_version > self.max_staleness
        return too_stale or self.schedule.due(self.version, self.rollout_version)

    def _collect(self, timer: PhaseTimer, metrics: dict[str, float]) -> tuple[_InFlight, Batch]:
        flight, self.in_flight = self.in_flight, None
        with timer.phase("wait_rollout"):
            sampled = flight.sample.result()
        if self.launcher.concurrent:  # the background thread's phases, as overlapped time
            timer.add_spans(self._ahead_timer.pop_spans())
            for key, seconds in self._ahead_timer.pop().items():
                if key != "time/step":
                    metrics[key.replace("time/", "time/ahead/", 1)] = seconds
        if not 0 <= flight.index - flight.version <= self.max_staleness:  # an invariant
            raise RuntimeError(f"sample {flight.index} is {flight.index - flight.version} stale")
        return flight, sampled

    def _prepare(self, batch: Batch, staleness: int, timer: PhaseTimer) -> None:
        """Tag staleness; for stale samples, π_old from the trainer and the sampler's μ kept."""
        size = batch.batch_size[0]
        batch[Field.STALENESS] = torch.full((size,), staleness, dtype=torch.long)
        if staleness > 0 or self.cfg.recompute_log_probs == "always":
            batch[Field.ROLLOUT_LOG_PROBS] = batch[Field.OLD_LOG_PROBS]
            if getattr(self.algorithm, "old_log_probs_in_update", False):
                return  # taken in the update's forward (module doc)
            with timer.phase("old_log_probs"):
                batch[Field.OLD_LOG_PROBS] = self.roles.actor.log_probs(batch)

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
            }
        next_launch = flight.index + 1 if flight is not None else self.version
        lagging = self.syncer is not None and self.rollout_version != self.version
        if lagging and not self._must_sync(next_launch):
            state["rollout_weights"] = self.syncer.rollout_state()
        return state

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
            self.in_flight = _InFlight(saved["index"], saved["version"], prompts, sample)
        if state["rollout_weights"] is not None:
            self.syncer.load_rollout_state(state["rollout_weights"])
        elif self.syncer is not None and self.rollout_version == self.version:
            self.syncer.sync()  # the copy was built from the initial weights: refresh it

    def close(self) -> None:
        self.launcher.close()


def _generate(rollout: Any, prompts: PromptBatch, timer: PhaseTimer) -> Batch:
    with timer.phase("generate"):
        return rollout.generate(prompts.ids, prompts.mask)


# ------------------------------------------------------------------------------ building


def staleness_config(cfg: Any) -> StalenessConfig:
    """The run's ``staleness:`` section."""
    return cfg.staleness


def build_pipeline(
    cfg: Any,
    algorithm: Any,
    runtime: Any,
    next_prompts: Callable[[], PromptBatch],
    launcher: Launcher | None = None,
) -> ExperiencePipeline:
    """The pipeline for ``runtime``'s roles.

    A runtime whose rollout may hold its own copy of the policy offers ``weight_syncer()``
    (None when every rollout worker samples with the actor's module), and says whether the
    experience calls roles on the rollout's workers (``experience_shares_rollout_workers``).
    The local runtime offers neither: its rollout shares the actor's module, and gets a
    shadow copy here when samples may be stale.
    """
    max_staleness = cfg.placement.max_staleness
    staleness = staleness_config(cfg)
    roles, syncer = runtime.roles, None
    make_syncer = getattr(runtime, "weight_syncer", None)
    if make_syncer is not None:
        syncer = make_syncer(staleness.sync_bucket_mb)
        if syncer is None and max_staleness > 0:
            raise UserError(
                f"max_staleness={max_staleness} needs the rollout on devices of its own, but "
                f"strategy {cfg.placement.strategy} samples with the trainer's weights; use "
                "strategy separate, or max_staleness 0",
                where="placement.max_staleness",
            )
    elif max_staleness > 0:
        if not isinstance(getattr(roles.actor, "model", None), torch.nn.Module) or hasattr(
            roles.rollout, "generate_async"
        ):
            raise UserError(
                "this runtime cannot sync a rollout copy yet; use max_staleness 0",
                where="placement.max_staleness",
            )
        roles, syncer = with_local_shadow(roles)
    shares = getattr(runtime, "experience_shares_rollout_workers", None)
    return ExperiencePipeline(
        algorithm,
        roles,
        next_prompts,
        max_staleness=max_staleness,
        staleness=staleness,
        syncer=syncer,
        launcher=launcher,
        launch_first=not (shares is not None and shares()),
    )
