"""Preference stages that sample their own pairs: online_dpo, rso, brain.

They share the online machinery of ppo/grpo: prompts from ``prompt_set``, the roles from
``build_runtime`` (same rollout, reward and reference roles, same placement: in this process,
or Ray workers under Flatten / Interleave), and an algorithm from ``placerl/algos`` whose
``step`` is a dataflow of timed phases. What is theirs is *which policy samples*: the
``SamplingPolicy`` below, a rollout that follows the trained policy with a bounded lag (online
DPO; BRAIn with ``proposal: policy``) or stays the frozen initial policy (RSO; BRAIn with
``proposal: sft``).

Under Flatten and Interleave every rollout worker samples with the actor's own module, so
only the on-policy sampler fits there (``max_staleness: 0``); a lagging snapshot or a frozen
sampler needs a copy of the policy of its own, which for now only the local runtime makes.
Separate (rollout on devices of its own) is refused until its weight sync drives this
sampler.
"""

from __future__ import annotations

import dataclasses

import torch

from placerl.algos.brain import BRAIn
from placerl.algos.online_dpo import OnlineDPO
from placerl.algos.pair_training import pair_objective
from placerl.algos.rso import RSO
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.evaluation import evaluate_policy
from placerl.models.loading import LoadOptions, load_policy, load_tokenizer
from placerl.models.lora import FrozenBase, is_lora, sync_view, with_lora
from placerl.roles.rollout import RolloutWorker
from placerl.runtime import build_runtime
from placerl.runtime.local import sampling_params
from placerl.runtime.weight_sync import copy_weights
from placerl.stages.sources import model_path, prompt_data
from placerl.types import Batch, Field


def build_sampled_preference_stage(cfg: RunConfig) -> SampledPreferenceStage:
    check_config(cfg)
    return SampledPreferenceStage(cfg)


def follows_policy(cfg: RunConfig) -> bool:
    """Whether the stage samples from the trained policy (else from the frozen initial one)."""
    return cfg.stage == "online_dpo" or (cfg.stage == "brain" and cfg.brain.proposal == "policy")


def check_config(cfg: RunConfig) -> None:
    """What the config schema cannot see from one section alone; before any worker starts."""
    check_placement(cfg)
    if cfg.stage != "online_dpo":
        return
    n = cfg.rollout.samples_per_prompt
    if n < 2:
        raise UserError(
            f"online_dpo compares samples of one prompt: expected >= 2, got {n}",
            where="rollout.samples_per_prompt",
        )
    if cfg.online_dpo.pairs_per_prompt > n // 2:
        raise UserError(
            f"{cfg.online_dpo.pairs_per_prompt} pairs need 2 samples each, but "
            f"rollout.samples_per_prompt is {n}: expected at most {n // 2}",
            where="online_dpo.pairs_per_prompt",
        )


def check_placement(cfg: RunConfig) -> None:
    """Local runs anything; Flatten / Interleave sample with the trainer's module (on-policy)."""
    strategy, bound = cfg.placement.strategy, cfg.placement.max_staleness
    if strategy == "local":
        return
    if strategy not in ("flatten", "interleave"):
        raise UserError(
            f"{cfg.stage} runs on strategy local, flatten or interleave for now (the rollout "
            f"samples with the trainer's module); got strategy {strategy}",
            where="placement.strategy",
        )
    if not follows_policy(cfg):
        what = "rso" if cfg.stage == "rso" else "brain with proposal sft"
        raise UserError(
            f"{what} samples from the frozen initial policy, which needs a rollout copy of its "
            f"own, but strategy {strategy} samples with the trainer's weights; use strategy "
            "local",
            where="placement.strategy",
        )
    if bound > 0:
        raise UserError(
            f"max_staleness={bound} needs a rollout copy that lags the trainer, but strategy "
            f"{strategy} samples with the trainer's weights; use max_staleness 0, or strategy "
            "local",
            where="placement.max_staleness",
        )


def make_algorithm(cfg: RunConfig) -> OnlineDPO | RSO | BRAIn:
    if cfg.stage == "online_dpo":
        objective = pair_objective(cfg.preference)
        return OnlineDPO(cfg.online_dpo, objective, cfg.rollout.samples_per_prompt)
    if cfg.stage == "rso":
        return RSO(cfg.rso, pair_objective(cfg.preference), seed=cfg.seed)
    # proposal sft: the prior is the proposal, unless a different reference is named
    needs_reference = cfg.brain.proposal == "policy" or cfg.reference is not None
    return BRAIn(cfg.brain, needs_reference)


class SamplingPolicy:
    """The rollout of these stages: the policy that samples, and how far it lags the trained one.

    ``trained`` is the module to follow, or None for a frozen sampler. A follower is refreshed
    (weights copied) whenever its lag would exceed ``max_staleness`` updates; with bound 0 and
    the trained module itself as its model there is nothing to copy, nor with ``in_step``: a
    runtime's rollout that samples with the actor's weights after every update (Ray workers).
    Every batch records its lag in ``STALENESS``. Exact resume: the refreshed weights are part
    of the state (only when they differ from the initial ones, so RSO's frozen sampler saves
    nothing).
    """

    def __init__(self, worker, trained=None, max_staleness: int = 0, in_step: bool = False):
        self.worker = worker
        self.trained = trained
        self.max_staleness = max_staleness
        self.in_step = in_step
        self.version = 0  # updates of the trained policy the sampling weights are from
        self.lag = 0

    @property
    def shared(self) -> bool:
        """Whether the sampler always holds the trained weights: nothing to copy, ever."""
        if self.trained is None:
            return False
        return self.in_step or getattr(self.worker, "model", None) is self.trained

    def sync(self, updates: int) -> None:
        """Before sampling, with ``updates`` policy updates done so far."""
        if self.trained is not None and updates - self.version > self.max_staleness:
            if not self.shared:
                copy_weights(sync_view(self.trained), sync_view(self.worker.model))
            self.version = updates
        self.lag = updates - self.version

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> Batch:
        batch = self.worker.generate(prompt_ids, prompt_mask)
        batch[Field.STALENESS] = torch.full((batch.batch_size[0],), self.lag, dtype=torch.long)
        return batch

    def state_dict(self) -> dict:
        weights = None
        if self.trained is not None and not self.shared and self.version > 0:
            weights = {k: v.clone() for k, v in self.worker.model.state_dict().items()}
        return {"worker": self.worker.state_dict(), "version": self.version, "weights": weights}

    def load_state_dict(self, state: dict) -> None:
        self.worker.load_state_dict(state["worker"])
        self.version = state["version"]
        if state["weights"] is not None:
            self.worker.load_weights(state["weights"])


def sampling_policy(cfg: RunConfig, path, tokenizer, roles, follows_policy: bool):
    """The runtime's rollout (on-policy), a snapshot copy (stale), or the frozen initial policy.
    Only the first under Ray (``check_placement``); the others are local models."""
    if follows_policy and cfg.placement.max_staleness == 0:
        in_step = cfg.placement.strategy != "local"  # local: the rollout shares the module
        return SamplingPolicy(roles.rollout, roles.actor.model, 0, in_step=in_step)
    lora = is_lora(roles.actor.model)
    if not follows_policy and roles.reference is not None and cfg.reference is None:
        model = roles.reference.model  # the reference is the initial policy: share it
    elif not follows_policy and lora:
        model = FrozenBase(roles.actor.model)  # the initial policy is the LoRA model's base
    else:  # a snapshot of the policy: with LoRA the same adapters, synced by themselves
        policy = load_policy(path, LoadOptions.of(cfg.model))
        model = with_lora(policy, cfg.model.lora).eval().requires_grad_(False)
    worker = RolloutWorker(model, tokenizer, sampling_params(cfg), seed=cfg.seed)
    trained = roles.actor.model if follows_policy else None
    return SamplingPolicy(worker, trained, cfg.placement.max_staleness)


class SampledPreferenceStage:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.name = cfg.stage
        path = model_path(cfg)
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or path, LoadOptions.of(cfg.model))
        self.policy = with_lora(load_policy(path, LoadOptions.of(cfg.model)), cfg.model.lora)
        self.algorithm = make_algorithm(cfg)
        self.prompts, self.eval_prompts, self.stream = prompt_data(cfg, self.tokenizer)
        self.runtime = build_runtime(cfg, path, self.tokenizer, self.policy, self.algorithm)
        try:
            roles = self.runtime.roles
            follows = self.algorithm.follows_policy
            self.sampler = sampling_policy(cfg, path, self.tokenizer, roles, follows)
        except BaseException:
            self.runtime.close()  # the trainer closes only a stage that was built
            raise
        self.roles = dataclasses.replace(roles, rollout=self.sampler)

    def step(self, step: int, timer) -> dict[str, float]:
        with timer.phase("sync"):
            self.sampler.sync(step)  # one update per step: `step` updates are done
        batch = self.prompts.batch(
            self.stream.next_batch(),
            self.tokenizer.pad_token_id,
            self.algorithm.samples_per_prompt,
        )
        metrics = self.algorithm.step(self.roles, batch, timer, step)
        timer.add_spans(self.runtime.pop_spans())  # the workers' phases, for the timeline
        return metrics | {"rollout/staleness": float(self.sampler.lag)}

    def evaluate(self) -> dict[str, float]:
        """Greedy held-out responses: ``eval/reward`` (the run's reward function or model,
        so prompts without answers are measured too), ``eval/accuracy`` with an ``answer``
        column, and a few samples."""
        if self.eval_prompts is None:
            return {}
        self.runtime.pull_weights()
        return evaluate_policy(
            self.policy,
            self.tokenizer,
            self.eval_prompts,
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            stop_strings=tuple(self.cfg.rollout.stop_strings),
            reward=self.roles.reward,
            num_samples=self.cfg.trainer.log_samples,
        )

    def trained_models(self) -> dict:
        self.runtime.pull_weights()
        return {"policy": self.policy}

    def state_dict(self) -> dict:
        return {
            "actor": self.roles.actor.state_dict(),
            "sampler": self.sampler.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "data": self.stream.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.runtime.push_weights()  # the restored weights, to the workers (Ray runtime)
        self.roles.actor.load_state_dict(state["actor"])
        self.sampler.load_state_dict(state["sampler"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.stream.load_state_dict(state["data"])

    def close(self) -> None:
        """Stop the runtime's workers (nothing to do for the local runtime)."""
        self.runtime.close()
