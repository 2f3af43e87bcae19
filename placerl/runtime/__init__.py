"""Runtime: turns a Plan into workers and carries the roles' calls to them.

``build_runtime`` is the one entry point an online stage uses. It makes the run's Plan
(``placement.plan_from_config``), decides once how the rollout holds the policy
(``RolloutSetup``) and builds the roles: in this process for ``strategy: local``
(``local.py``), else on Ray workers (``ray/``, imported only then, so local runs never load
Ray). Either way the result is a ``Runtime``: what the experience pipeline and the stage may
rely on, and all they may rely on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the runtime loads nothing heavy until it is built
    from placerl.algos.online import Needs, Roles
    from placerl.config.schema import RunConfig
    from placerl.placement.plan.plan import Plan
    from placerl.runtime.launch import Launcher
    from placerl.runtime.sync import RolloutSync
    from placerl.timing import Span


@dataclass(frozen=True)
class RolloutSetup:
    """How the rollout holds the policy, decided once when the runtime is built."""

    engine: bool  # an inference engine (vLLM) samples, with weights of its own
    lagging: bool  # it may lag the trainer (max_staleness ≥ 1, frozen): a copy of its own
    frozen: bool  # a frozen proposal: that copy is never synced

    @classmethod
    def of(cls, cfg: RunConfig, plan: Plan, needs: Needs) -> RolloutSetup:
        frozen = needs.proposal == "initial"
        engine = cfg.rollout.engine != "placerl"
        return cls(engine=engine, lagging=frozen or plan.max_staleness > 0, frozen=frozen)


class Runtime(Protocol):
    """What a runtime gives the pipeline and the stage."""

    roles: Roles  # local objects or handles to workers, behind algos.online's protocols
    plan: Plan  # where every role lives; the staleness bound and offload come from here
    setup: RolloutSetup
    launcher: Launcher  # how a sample starts (at once, on a thread, on rollout workers)
    # a role the experience calls after sampling has a worker on a rollout worker, where a
    # call waits behind the sample launched ahead (Ray runs one call per worker at a time)
    experience_shares_rollout_workers: bool

    def rollout_sync(self) -> RolloutSync | None:
        """The trainer → rollout sync, or None when the rollout samples with the actor's
        own module (nothing to sync); decided when the runtime was built."""
        ...

    def pull_weights(self) -> None:
        """Bring the trained models' weights to the controller's copies (checkpoints, eval)."""
        ...

    def push_weights(self) -> None:
        """Load the controller's copies (just restored) into the workers."""
        ...

    def policy_sampler(self) -> Callable | None:
        """A ``generate(ids, mask, params)`` sampling the current policy where it lives, for
        evaluation; None when the controller's copy of the policy is the place."""
        ...

    def pop_spans(self) -> list[Span]:
        """Timeline spans recorded by workers since the last call."""
        ...

    def close(self) -> None: ...


def build_runtime(cfg: RunConfig, policy_path: Path, tokenizer, policy, needs: Needs) -> Runtime:
    """The runtime the config's placement asks for, with its roles built."""
    from placerl.placement.auto.plan import runs_in_process
    from placerl.placement.from_config import plan_from_config

    if runs_in_process(cfg):  # strategy local, or auto's pinned pick of the local plan
        from placerl.runtime.local import LocalRuntime

        plan = plan_from_config(cfg)
        setup = RolloutSetup.of(cfg, plan, needs)
        return LocalRuntime.build(cfg, plan, setup, policy_path, tokenizer, policy, needs)
    from placerl.runtime.ray.runtime import start_ray_runtime

    return start_ray_runtime(cfg, policy_path, tokenizer, policy, needs)
