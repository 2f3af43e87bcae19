"""Runtime: turns a Plan into workers and carries roles' calls to them.

``build_runtime`` is the one entry point a stage uses. ``placement.strategy: local`` keeps
every role in this process (``local.py``); any other strategy builds the Plan with
``placerl.placement.plan_from_config`` and carries it out on Ray workers (``ray/``), imported
only then, so local runs never load Ray. Both give an object with

- ``roles``: a ``Roles`` whose members have the local roles' methods;
- ``pull_weights()`` / ``push_weights()``: bring the trained models' weights to / from the
  controller's copies (which evaluation and checkpoints use);
- ``pop_spans()``: timeline spans recorded by workers since the last call;
- ``policy_sampler()``: a ``generate(ids, mask, params)`` that samples the current policy
  where it lives (Ray workers whose rollout is the actor's module), for evaluation; None
  when the controller's own copy is that place (local: it *is* the actor's model);
- ``close()``: stop the workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # runtime imports nothing at load time: algos import runtime.futures
    from placerl.algos.rollout_phase import Roles
    from placerl.config.schema import RunConfig
    from placerl.timing import Span


@dataclass
class LocalRuntime:
    """Every role in this process: the controller's models *are* the roles' models."""

    roles: Roles

    def pull_weights(self) -> None:
        pass

    def push_weights(self) -> None:
        pass

    def pop_spans(self) -> list[Span]:
        return []

    def policy_sampler(self):
        return None

    def close(self) -> None:
        pass


def build_runtime(cfg: RunConfig, policy_path: Path, tokenizer, policy, algorithm):
    """The runtime the config's placement asks for, with its roles built."""
    from placerl.placement.auto.plan import runs_in_process

    if runs_in_process(cfg):  # strategy local, or auto's pinned pick of the local plan
        from placerl.runtime.local import build_roles

        return LocalRuntime(build_roles(cfg, policy_path, tokenizer, policy, algorithm))
    from placerl.runtime.ray.runtime import start_ray_runtime

    return start_ray_runtime(cfg, policy_path, tokenizer, policy, algorithm)
