"""The local runtime: every role in this process, on one device.

The rollout shares the actor's module (colocated, nothing to sync), the reference is a second
copy of the initial policy — or, with LoRA, the actor's model with its adapter disabled (no
second copy) — the critic starts from the reward model (InstructGPT) or the policy. A Ray
runtime implements the same ``build_roles`` contract with remote handles whose methods have
the same names and signatures.

The device is ``placement.device`` (models/device.py): every model goes there, and each role is
wrapped in ``OnDevice``, which moves a call's tensors to the role's device and its results back
to the CPU, the same boundary as a Ray worker's ``call``. Frozen models (reference, reward
model) are loaded in the training precision (bf16 with ``model.precision: bf16``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from placerl.algos.rollout_phase import Roles
from placerl.config.schema import RunConfig
from placerl.models.device import CPU, resolve_device, to_device
from placerl.models.loading import LoadOptions, load_policy, load_reward_model, load_value_model
from placerl.models.lora import FrozenBase, is_lora, reference_is_base, with_lora
from placerl.roles.actor import ActorWorker
from placerl.roles.critic import CriticWorker
from placerl.roles.micro_batches import micro_batching
from placerl.roles.reference import ReferenceWorker
from placerl.roles.reward import ModelReward, RuleReward, import_reward_function
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.tasks.rewards import exact_match_reward


def sampling_params(cfg: RunConfig) -> SamplingParams:
    r = cfg.rollout
    return SamplingParams(
        max_new_tokens=r.max_new_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        stop_strings=tuple(r.stop_strings),
        precision=cfg.model.precision,
    )


def build_reward(cfg: RunConfig, tokenizer):
    if cfg.reward.model:
        options = LoadOptions.of(cfg.model, frozen=True)  # held in the training precision
        model = load_reward_model(cfg.reward.model, trained=True, options=options)
        return ModelReward(
            model, precision=cfg.model.precision, scale=cfg.reward.scale, name=cfg.reward.model
        )
    if cfg.reward.function:
        fn = import_reward_function(cfg.reward.function)
        return RuleReward(fn, tokenizer, cfg.reward.function, cfg.reward.scale)
    return RuleReward(exact_match_reward, tokenizer, "builtin exact-match reward", cfg.reward.scale)


def training_memory(cfg: RunConfig) -> dict:
    """The memory settings of a trained role: micro-batches and gradient checkpointing."""
    return {
        "micro_batching": micro_batching(cfg),
        "gradient_checkpointing": cfg.model.gradient_checkpointing,
    }


def make_actor(cfg: RunConfig, policy, cls=ActorWorker, **extra) -> ActorWorker:
    """The actor around ``policy``; ``cls``/``extra`` let a runtime use a data-parallel one."""
    return cls(
        policy,
        cfg.optim,
        cfg.trainer.steps,
        temperature=cfg.rollout.temperature,
        precision=cfg.model.precision,
        seed=cfg.seed,
        **training_memory(cfg),
        **extra,
    )


def make_rollout(cfg: RunConfig, policy, tokenizer) -> RolloutWorker:
    return RolloutWorker(policy, tokenizer, sampling_params(cfg), seed=cfg.seed)


def make_reference(cfg: RunConfig, policy_path: Path, actor_model=None) -> ReferenceWorker:
    """The frozen reference. Given the actor's LoRA model (in this process), and no other
    reference named, it is that model with its adapter disabled: the base, for free."""
    if (
        actor_model is not None
        and is_lora(actor_model)
        and reference_is_base(cfg.reference, policy_path)
    ):
        ref_model = FrozenBase(actor_model)
    else:
        ref_model = load_policy(
            cfg.reference or policy_path, LoadOptions.of(cfg.model, frozen=True)
        )  # training precision
    return ReferenceWorker(
        ref_model, temperature=cfg.rollout.temperature, precision=cfg.model.precision
    )


def critic_path(cfg: RunConfig, policy_path: Path) -> Path:
    """Where the critic starts: the critic checkpoint, else the reward model, else the policy."""
    return Path(cfg.critic or cfg.reward.model or policy_path)


def make_critic(
    cfg: RunConfig, policy_path: Path, tokenizer, cls=CriticWorker, **extra
) -> CriticWorker:
    critic_model = with_lora(
        load_value_model(critic_path(cfg, policy_path), options=LoadOptions.of(cfg.model)),
        cfg.model.lora,
        "critic",
    )
    return cls(
        critic_model,
        cfg.optim,
        cfg.trainer.steps,
        lr=cfg.ppo.critic_lr,
        precision=cfg.model.precision,
        seed=cfg.seed,
        **training_memory(cfg),
        **extra,
    )


def build_roles(cfg: RunConfig, policy_path: Path, tokenizer, policy, algorithm) -> Roles:
    """Every role on ``placement.device``; ``policy`` (the stage's model) is moved there too."""
    device = resolve_device(cfg.placement.device)
    policy.to(device)
    actor = make_actor(cfg, policy)
    if cfg.rollout.engine == "vllm":  # an engine with its own weights; the pipeline syncs it
        from placerl.runtime.engine import make_engine_rollout

        rollout = make_engine_rollout(cfg, policy_path, tokenizer)
    else:
        rollout = make_rollout(cfg, policy, tokenizer)
    reference = make_reference(cfg, policy_path, policy) if algorithm.needs_reference else None
    critic = make_critic(cfg, policy_path, tokenizer) if algorithm.needs_critic else None
    reward = build_reward(cfg, tokenizer)
    return Roles(
        rollout=on_device(rollout, device),
        actor=on_device(actor, device),
        reward=on_device(reward, device),
        reference=on_device(reference, device),
        critic=on_device(critic, device),
    )


def on_device(role: Any, device: torch.device) -> Any:
    """``role`` with its model on ``device`` and its calls through ``OnDevice``; a role
    without a model (a rule reward) or no role (None) as it is."""
    if role is None or getattr(role, "model", None) is None:
        return role
    role.model.to(device)
    return OnDevice(role, device)


# a restored state stays where it is: optimizers move their state to the parameters' device
# themselves, and torch.Generator states must stay CPU byte tensors
KEEP_ARGUMENTS = frozenset({"load_state_dict"})


class OnDevice:
    """A local role whose methods take their tensor arguments to ``device`` and give their
    tensor results back on the CPU (inside dicts, lists, TensorDicts): the controller and the
    algorithms keep CPU batches, as with Ray workers. Attributes (``model``, ``params``, ...)
    are the role's own, read and set through the wrapper; a copy copies the role too."""

    def __init__(self, role: Any, device: torch.device):
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "device", device)

    def __getattr__(self, name: str) -> Any:
        if name in ("role", "device"):  # not set yet (a copy under construction)
            raise AttributeError(name)
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
