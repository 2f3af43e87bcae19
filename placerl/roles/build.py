"""How each role is built from a run config: one place for the local and the Ray runtime.

The runtime decides *where* a role lives and whether its rollout shares the actor's module;
these factories only say what the role is: its model, loaded in the training precision when
frozen (bf16 with ``model.precision: bf16``), and its settings.
"""

from __future__ import annotations

from pathlib import Path

import torch

from placerl.config.schema import RunConfig
from placerl.models.loading import LoadOptions, load_policy, load_reward_model, load_value_model
from placerl.models.lora import FrozenBase, is_lora, reference_is_base, with_lora
from placerl.models.micro_batches import micro_batching
from placerl.models.tokens import end_token_ids
from placerl.roles.actor import ActorWorker
from placerl.roles.critic import CriticWorker
from placerl.roles.reference import ReferenceWorker
from placerl.roles.reward import (
    EpisodeReward,
    EpisodeScorer,
    ModelReward,
    RuleReward,
    import_reward_function,
)
from placerl.roles.rollout import (
    EngineEpisodeRolloutWorker,
    EngineRolloutWorker,
    EpisodeRolloutWorker,
    RolloutWorker,
)
from placerl.rollout.episodes.sampling import EpisodeSetup
from placerl.rollout.sampling import SamplingParams
from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine
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
    """The reward role: a reward model, a rule over decoded responses, or — for episodes
    scored where they ran (``env.reward``: env or function) — the rollout's scores."""
    source = cfg.env.reward_source(cfg.reward.model) if cfg.env.enabled else None
    if source in ("env", "function"):
        return EpisodeReward(cfg.reward.scale, f"env.reward: {source}")
    if cfg.reward.model:
        options = LoadOptions.of(cfg.model, frozen=True)  # held in the training precision
        model = load_reward_model(cfg.reward.model, trained=True, options=options)
        return ModelReward(
            model, precision=cfg.model.precision, scale=cfg.reward.scale, name=cfg.reward.model
        )
    return rule_reward(cfg, tokenizer)


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


def rule_reward(cfg: RunConfig, tokenizer, scale: float | None = None) -> RuleReward:
    """``reward.function``, or the builtin exact match, as a rule reward."""
    scale = cfg.reward.scale if scale is None else scale
    if cfg.reward.function:
        fn = import_reward_function(cfg.reward.function)
        return RuleReward(fn, tokenizer, cfg.reward.function, scale)
    return RuleReward(exact_match_reward, tokenizer, "builtin exact-match reward", scale)


def episode_setup(cfg: RunConfig, tokenizer) -> EpisodeSetup:
    """The ``env:`` section as what an episode rollout runs: the environment factory (the
    user's, or the tool environment over ``env.tools``), the limits, and the scorer."""
    from placerl.rollout.envs import load_env_factory, load_tools, tool_env_factory
    from placerl.rollout.envs.loading import import_callable

    env = cfg.env
    if env.factory:
        factory, where = load_env_factory(env.factory), "env.factory"
    else:
        parser = None if env.parser == "hermes" else import_callable(env.parser, "env.parser")()
        tools = load_tools(env.tools)
        factory, where = tool_env_factory(tools, system=env.system, parser=parser), "env.tools"
    source = env.reward_source(cfg.reward.model)
    score = None
    if source == "env":
        score = EpisodeScorer(None, where)
    elif source == "function":  # unscaled here: the reward role scales
        score = EpisodeScorer(rule_reward(cfg, tokenizer, scale=1.0))
    return EpisodeSetup(
        factory=factory,
        limits=env.limits(),
        max_new_tokens=cfg.rollout.max_new_tokens,
        score=score,
        gather_s=env.gather_s,
        where=where,
    )


def make_rollout(cfg: RunConfig, policy, tokenizer) -> RolloutWorker | EpisodeRolloutWorker:
    if cfg.env.enabled:
        setup = episode_setup(cfg, tokenizer)
        return EpisodeRolloutWorker(policy, tokenizer, sampling_params(cfg), setup, seed=cfg.seed)
    return RolloutWorker(policy, tokenizer, sampling_params(cfg), seed=cfg.seed)


def rollout_copy(cfg: RunConfig, policy_path: Path):
    """A copy of the initial policy for a rollout of its own: never trained, only synced into
    (casting), so held in the training precision; with LoRA the same LoRA model, so the
    adapters sync alone."""
    options = LoadOptions.of(cfg.model, frozen=True)
    return with_lora(load_policy(policy_path, options), cfg.model.lora).requires_grad_(False)


def reference_model(cfg: RunConfig, policy_path: Path, actor_model=None):
    """The frozen reference's model. Given the actor's LoRA model (in this process), and no
    other reference named, that model with its adapter disabled: the base, for free; else a
    model of its own, in the training precision."""
    lora = actor_model is not None and is_lora(actor_model)
    if lora and reference_is_base(cfg.reference, policy_path):
        return FrozenBase(actor_model)
    options = LoadOptions.of(cfg.model, frozen=True)
    return load_policy(cfg.reference or policy_path, options).eval().requires_grad_(False)


def make_reference(cfg: RunConfig, policy_path: Path, actor_model=None) -> ReferenceWorker:
    model = reference_model(cfg, policy_path, actor_model)
    return ReferenceWorker(
        model, temperature=cfg.rollout.temperature, precision=cfg.model.precision
    )


def critic_path(cfg: RunConfig, policy_path: Path) -> Path:
    """Where the critic starts: the critic checkpoint, else the reward model, else the policy."""
    return Path(cfg.critic or cfg.reward.model or policy_path)


def critic_model(cfg: RunConfig, policy_path: Path):
    """The critic's model (a value head; LoRA when asked): for the role and the mirror."""
    model = load_value_model(critic_path(cfg, policy_path), options=LoadOptions.of(cfg.model))
    return with_lora(model, cfg.model.lora, "critic")


def make_critic(cfg: RunConfig, policy_path: Path, cls=CriticWorker, **extra) -> CriticWorker:
    return cls(
        critic_model(cfg, policy_path),
        cfg.optim,
        cfg.trainer.steps,
        lr=cfg.ppo.critic_lr,
        precision=cfg.model.precision,
        seed=cfg.seed,
        **training_memory(cfg),
        **extra,
    )


def engine_end_ids(model_dir: str | Path, tokenizer) -> tuple[int, ...]:
    """The run's end tokens (models/tokens.py) for an engine built from ``model_dir``: its
    generation_config.json is read without loading the model."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(model_dir)
    except OSError:  # no generation_config.json
        config = None
    return end_token_ids(tokenizer, SimpleNamespace(generation_config=config))


def response_budget(cfg: RunConfig) -> int:
    """The most tokens after a prompt: one response, or an episode's model and observation
    tokens together (``env.max_tokens``)."""
    return cfg.env.max_tokens if cfg.env.enabled else cfg.rollout.max_new_tokens


def engine_options(cfg: RunConfig) -> EngineOptions:
    v = cfg.rollout.vllm
    return EngineOptions(
        dtype="bfloat16" if cfg.model.precision == "bf16" else "float32",
        max_model_len=v.max_model_len or cfg.data.max_prompt_len + response_budget(cfg),
        seed=cfg.seed,
        gpu_memory_utilization=v.gpu_memory_utilization,
        cpu_kv_cache_gb=v.cpu_kv_cache_gb,
        enforce_eager=v.enforce_eager,
        enable_sleep_mode=v.sleep_when_training and torch.cuda.is_available(),
    )


def make_engine_rollout(
    cfg: RunConfig, model_dir: str | Path, tokenizer
) -> EngineRolloutWorker | EngineEpisodeRolloutWorker:
    """The rollout on an inference engine (vLLM) loaded from ``model_dir``."""
    engine = VLLMEngine(
        model_dir,
        engine_options(cfg),
        end_token_ids=engine_end_ids(model_dir, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        tokenizer=tokenizer,
    )
    if cfg.env.enabled:
        setup = episode_setup(cfg, tokenizer)
        params = sampling_params(cfg)
        return EngineEpisodeRolloutWorker(engine, tokenizer, params, setup, seed=cfg.seed)
    return EngineRolloutWorker(engine, sampling_params(cfg), seed=cfg.seed)
