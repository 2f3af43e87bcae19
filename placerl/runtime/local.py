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
        return ModelReward(model, precision=cfg.model.precision, scale=cfg.reward.scale)
    if cfg.reward.function:
        fn = import_reward_function(cfg.reward.function)
        return RuleReward(fn, tokenizer, cfg.reward.function, cfg.reward.scale)
    return RuleReward(exact_match_reward, tokenizer, "builtin exact-match reward", cfg.reward.scale)


def build_roles(cfg: RunConfig, policy_path: Path, tokenizer, policy, algorithm) -> Roles:
    precision, temperature = cfg.model.precision, cfg.rollout.temperature
    actor = ActorWorker(
        policy,
        cfg.optim,
        cfg.trainer.steps,
        temperature=temperature,
        precision=precision,
        seed=cfg.seed,
    )
    rollout = RolloutWorker(policy, tokenizer, sampling_params(cfg), seed=cfg.seed)
    reference = None
    if algorithm.needs_reference:
        ref_model = load_policy(cfg.reference or policy_path)
        reference = ReferenceWorker(ref_model, temperature=temperature, precision=precision)
    critic = None
    if algorithm.needs_critic:
        critic_path = cfg.critic or cfg.reward.model or policy_path
        critic_model = load_value_model(critic_path, tokenizer.pad_token_id)
        critic = CriticWorker(
            critic_model,
            cfg.optim,
            cfg.trainer.steps,
            lr=cfg.ppo.critic_lr,
            precision=precision,
            seed=cfg.seed,
        )
    reward = build_reward(cfg, tokenizer)
    return Roles(rollout=rollout, actor=actor, reward=reward, reference=reference, critic=critic)
