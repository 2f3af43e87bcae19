"""The local runtime: every role in this process, on one device.

The rollout shares the actor's module (colocated, nothing to sync), the reference is a second
copy of the initial policy, the critic starts from the reward model (InstructGPT) or the
policy. A Ray runtime implements the same ``build_roles`` contract with remote handles whose
methods have the same names and signatures.
"""

from __future__ import annotations

from pathlib import Path

from placerl.algos.rollout_phase import Roles
from placerl.config.schema import RunConfig
from placerl.models.loading import load_policy, load_reward_model, load_value_model
from placerl.roles.actor import ActorWorker
from placerl.roles.critic import CriticWorker
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
    )


def build_reward(cfg: RunConfig, tokenizer):
    if cfg.reward.model:
        model = load_reward_model(cfg.reward.model, tokenizer.pad_token_id, trained=True)
        return ModelReward(
            model, precision=cfg.model.precision, scale=cfg.reward.scale, name=cfg.reward.model
        )
    if cfg.reward.function:
        fn = import_reward_function(cfg.reward.function)
        return RuleReward(fn, tokenizer, cfg.reward.function, cfg.reward.scale)
    return RuleReward(exact_match_reward, tokenizer, "builtin exact-match reward", cfg.reward.scale)


def make_actor(cfg: RunConfig, policy, cls=ActorWorker, **extra) -> ActorWorker:
    """The actor around ``policy``; ``cls``/``extra`` let a runtime use a data-parallel one."""
    return cls(
        policy,
        cfg.optim,
        cfg.trainer.steps,
        temperature=cfg.rollout.temperature,
        precision=cfg.model.precision,
        seed=cfg.seed,
        **extra,
    )


def make_rollout(cfg: RunConfig, policy, tokenizer) -> RolloutWorker:
    return RolloutWorker(policy, tokenizer, sampling_params(cfg), seed=cfg.seed)


def make_reference(cfg: RunConfig, policy_path: Path) -> ReferenceWorker:
    ref_model = load_policy(cfg.reference or policy_path)
    return ReferenceWorker(
        ref_model, temperature=cfg.rollout.temperature, precision=cfg.model.precision
    )


def critic_path(cfg: RunConfig, policy_path: Path) -> Path:
    """Where the critic starts: the critic checkpoint, else the reward model, else the policy."""
    return Path(cfg.critic or cfg.reward.model or policy_path)


def make_critic(
    cfg: RunConfig, policy_path: Path, tokenizer, cls=CriticWorker, **extra
) -> CriticWorker:
    critic_model = load_value_model(critic_path(cfg, policy_path), tokenizer.pad_token_id)
    return cls(
        critic_model,
        cfg.optim,
        cfg.trainer.steps,
        lr=cfg.ppo.critic_lr,
        precision=cfg.model.precision,
        seed=cfg.seed,
        **extra,
    )


def build_roles(cfg: RunConfig, policy_path: Path, tokenizer, policy, algorithm) -> Roles:
    actor = make_actor(cfg, policy)
    rollout = make_rollout(cfg, policy, tokenizer)
    reference = make_reference(cfg, policy_path) if algorithm.needs_reference else None
    critic = make_critic(cfg, policy_path, tokenizer) if algorithm.needs_critic else None
    reward = build_reward(cfg, tokenizer)
    return Roles(rollout=rollout, actor=actor, reward=reward, reference=reference, critic=critic)
