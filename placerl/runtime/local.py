"""The local runtime: every role in this process, on one device.

The rollout shares the actor's module (colocated, nothing to sync) unless it may lag the
trainer: then it samples with a shadow copy the pipeline syncs (``LocalShadow``), or, for a
frozen proposal, the initial policy as it is — the reference model when that is the initial
policy, or the LoRA model's base. An inference engine holds weights of its own (``EngineSync``).
The reference is a second copy of the initial policy — or, with LoRA, the actor's model with
its adapter disabled — the critic starts from the reward model (InstructGPT) or the policy.

The device is ``placement.device`` (models/device.py): every model goes there, and each role is
wrapped in ``OnDevice``, which moves a call's tensors to the role's device and its results back
to the CPU, the same boundary as a Ray worker's ``call``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from placerl.algos.online import Roles
from placerl.config.schema import RunConfig
from placerl.models.device import CPU, resolve_device, to_device
from placerl.models.lora import FrozenBase, is_lora
from placerl.placement.plan.plan import Plan
from placerl.roles.build import (
    build_reward,
    make_actor,
    make_critic,
    make_engine_rollout,
    make_reference,
    make_rollout,
)
from placerl.roles.rollout import EngineRolloutWorker
from placerl.runtime import RolloutSetup
from placerl.runtime.launch import InlineLauncher, Launcher
from placerl.runtime.sync import RolloutSync
from placerl.runtime.sync.consumers import EngineSync, LocalShadow
from placerl.timing import Span


@dataclass
class LocalRuntime:
    """Every role in this process: the controller's models *are* the roles' models."""

    roles: Roles
    plan: Plan
    setup: RolloutSetup
    sync: RolloutSync | None = None
    launcher: Launcher = field(default_factory=InlineLauncher)
    experience_shares_rollout_workers: bool = False  # nothing runs ahead but the rollout
    engine: EngineRolloutWorker | None = None  # the rollout on vLLM, closed with the runtime

    @classmethod
    def build(
        cls, cfg: RunConfig, plan: Plan, setup: RolloutSetup, path: Path, tokenizer, policy, needs
    ) -> LocalRuntime:
        """Every role on ``placement.device``; ``policy`` (the stage's model) goes there too."""
        device = resolve_device(cfg.placement.device)
        policy.to(device)
        actor = make_actor(cfg, policy)
        reference = make_reference(cfg, path, policy) if needs.reference else None
        critic = make_critic(cfg, path) if needs.critic else None
        rollout, sync = _rollout(cfg, setup, path, tokenizer, policy, reference)
        roles = Roles(
            rollout=on_device(rollout, device),
            actor=on_device(actor, device),
            reward=on_device(build_reward(cfg, tokenizer), device),
            reference=on_device(reference, device),
            critic=on_device(critic, device),
        )
        engine = rollout if isinstance(rollout, EngineRolloutWorker) else None
        return cls(roles, plan, setup, sync, engine=engine)

    def rollout_sync(self) -> RolloutSync | None:
        return self.sync

    def pull_weights(self) -> None:
        pass

    def push_weights(self) -> None:
        pass

    def pop_spans(self) -> list[Span]:
        return []

    def policy_sampler(self):
        return None

    def close(self) -> None:
        """Shut an inference engine down now, not at interpreter exit (vllm_engine.close)."""
        if self.engine is not None:
            self.engine.close()


def _rollout(cfg: RunConfig, setup: RolloutSetup, path, tokenizer, policy, reference):
    """The rollout and what syncs it (module doc)."""
    if setup.engine:  # weights of its own, in the engine; the pipeline syncs it
        rollout = make_engine_rollout(cfg, path, tokenizer)
        keep = (cfg.staleness.sync_every or 0) > 1 or setup.lagging
        return rollout, EngineSync(policy, rollout, keep=keep)
    if not setup.lagging:
        return make_rollout(cfg, policy, tokenizer), None
    if setup.frozen and reference is not None and cfg.reference is None:
        model = reference.model  # the reference is the initial policy: share it
    elif setup.frozen and is_lora(policy):
        model = FrozenBase(policy)  # the initial policy is the LoRA model's base
    else:  # never trained, only synced into (casting): held in the training precision
        model = copy.deepcopy(policy).requires_grad_(False)
        if cfg.model.precision == "bf16":
            model.to(torch.bfloat16)
    return make_rollout(cfg, model, tokenizer), LocalShadow(policy, model)


def on_device(role: Any, device: torch.device) -> Any:
    """``role`` with its model (if any) on ``device`` and its calls through ``OnDevice``."""
    if role is None:
        return None
    if isinstance(role.model, torch.nn.Module):  # every role has one; a rule reward's is None
        role.model.to(device)
    return OnDevice(role, device)


# a restored state stays where it is: optimizers move their state to the parameters' device
# themselves, and torch.Generator states must stay CPU byte tensors
KEEP_ARGUMENTS = frozenset({"load_state_dict"})


class Deferred:
    """A local call run on its first ``result()``, in the phase that awaits it (so a local
    role's ``*_async`` runs where a plain call would); later calls return the same value."""

    def __init__(self, fn, args: tuple, kwargs: dict):
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._done, self._value = False, None

    def result(self) -> Any:
        if not self._done:
            self._value = self._fn(*self._args, **self._kwargs)
            self._done = True
        return self._value


class OnDevice:
    """A local role whose methods take their tensor arguments to ``device`` and give their
    tensor results back on the CPU (inside dicts, lists, TensorDicts): the controller and the
    algorithms keep CPU batches, as with Ray workers. ``name_async`` is ``name`` deferred
    (``Deferred``), the local twin of a Ray handle's. Attributes (``model``, ``params``, ...)
    are the role's own, read and set through the wrapper; a copy copies the role too."""

    def __init__(self, role: Any, device: torch.device):
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "device", device)

    def __getattr__(self, name: str) -> Any:
        if name in ("role", "device"):  # not set yet (a copy under construction)
            raise AttributeError(name)
        if name.endswith("_async"):
            method = getattr(self, name.removesuffix("_async"))
            return lambda *args, **kwargs: Deferred(method, args, kwargs)
        value = getattr(self.role, name)
        if name.startswith("_") or not callable(value) or isinstance(value, torch.nn.Module):
            return value
        device = self.device
        moves_args = name not in KEEP_ARGUMENTS

        def call(*args, **kwargs):
            if moves_args:
                args, kwargs = to_device(args, device), to_device(kwargs, device)
            return to_device(value(*args, **kwargs), CPU)

        call.__name__ = name
        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.role, name, value)

    def __copy__(self) -> OnDevice:
        return OnDevice(copy.copy(self.role), self.device)
