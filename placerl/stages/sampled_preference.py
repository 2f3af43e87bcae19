"""Preference stages that sample their own pairs: online_dpo, rso, brain.

They share the online machinery of ppo/grpo: prompts from ``prompt_set``, the roles from the
runtime's ``build_roles`` (same rollout, reward and reference roles, same placement), and an
algorithm from ``placerl/algos`` whose ``step`` is a dataflow of timed phases. What is theirs
is *which policy samples*: the ``SamplingPolicy`` below, a rollout that follows the trained
policy with a bounded lag (online DPO; BRAIn with ``proposal: policy``) or stays the frozen
initial policy (RSO; BRAIn with ``proposal: sft``).
"""

from __future__ import annotations

import torch

from placerl.algos.brain import BRAIn
from placerl.algos.online_dpo import OnlineDPO
from placerl.algos.pair_training import pair_objective
from placerl.algos.rso import RSO
from placerl.config.schema import RunConfig
from placerl.data.stream import IndexStream
from placerl.errors import UserError
from placerl.evaluation import evaluate_policy
from placerl.models.loading import load_policy, load_tokenizer
from placerl.roles.rollout import RolloutWorker
from placerl.runtime.local import build_roles, sampling_params
from placerl.runtime.weight_sync import copy_weights
from placerl.stages.sources import eval_source, model_path, prompt_set
from placerl.types import Batch, Field


def build_sampled_preference_stage(cfg: RunConfig) -> SampledPreferenceStage:
    check_config(cfg)
    return SampledPreferenceStage(cfg)


def check_config(cfg: RunConfig) -> None:
    """What the config schema cannot see from one section alone."""
    if cfg.placement.strategy != "local":
        raise UserError(
            f"{cfg.stage} runs on the local runtime only for now (every role in this process); "
            f"got strategy {cfg.placement.strategy}",
            where="placement.strategy",
        )
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
    the trained module itself as its model there is nothing to copy. Every batch records its
    lag in ``STALENESS``. Exact resume: the refreshed weights are part of the state (only
    when they differ from the initial ones, so RSO's frozen sampler saves nothing).
    """

    def __init__(self, worker: RolloutWorker, trained=None, max_staleness: int = 0):
        self.worker = worker
        self.trained = trained
        self.max_staleness = max_staleness
        self.version = 0  # updates of the trained policy the sampling weights are from
        self.lag = 0

    @property
    def shared(self) -> bool:
        return self.trained is not None and self.worker.model is self.trained

    def sync(self, updates: int) -> None:
        """Before sampling, with ``updates`` policy updates done so far."""
        if self.trained is not None and updates - self.version > self.max_staleness:
            if not self.shared:
                copy_weights(self.trained, self.worker.model)
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
    """The shared rollout (on-policy), a snapshot copy (stale), or the frozen initial policy."""
    if follows_policy and cfg.placement.max_staleness == 0:
        return SamplingPolicy(roles.rollout, roles.actor.model, 0)
    if not follows_policy and roles.reference is not None and cfg.reference is None:
        model = roles.reference.model  # the reference is the initial policy: share it
    else:
        model = load_policy(path).eval().requires_grad_(False)
    worker = RolloutWorker(model, tokenizer, sampling_params(cfg), seed=cfg.seed)
    trained = roles.actor.model if follows_policy else None
    return SamplingPolicy(worker, trained, cfg.placement.max_staleness)


class SampledPreferenceStage:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.name = cfg.stage
        path = model_path(cfg)
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or path)
        self.policy = load_policy(path)
        self.algorithm = make_algorithm(cfg)
        self.prompts = prompt_set(cfg, self.tokenizer, cfg.data.train, "train")
        eval_path = eval_source(cfg)
        self.eval_prompts = (
            prompt_set(cfg, self.tokenizer, eval_path, "eval") if eval_path else None
        )
        self.stream = IndexStream(len(self.prompts), cfg.trainer.batch_size, seed=cfg.seed)
        self.roles = build_roles(cfg, path, self.tokenizer, self.policy, self.algorithm)
        self.sampler = sampling_policy(
            cfg, path, self.tokenizer, self.roles, self.algorithm.follows_policy
        )
        self.roles.rollout = self.sampler

    def step(self, step: int, timer) -> dict[str, float]:
        with timer.phase("sync"):
            self.sampler.sync(step)  # one update per step: `step` updates are done
        batch = self.prompts.batch(
            self.stream.next_batch(),
            self.tokenizer.pad_token_id,
            self.algorithm.samples_per_prompt,
        )
        metrics = self.algorithm.step(self.roles, batch, timer, step)
        return metrics | {"rollout/staleness": float(self.sampler.lag)}

    def evaluate(self) -> dict[str, float]:
        if self.eval_prompts is None:
            return {}
        return evaluate_policy(
            self.policy,
            self.tokenizer,
            self.eval_prompts,
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            stop_strings=tuple(self.cfg.rollout.stop_strings),
            reward=self.roles.reward,
        )

    def trained_models(self) -> dict:
        return {"policy": self.policy}

    def state_dict(self) -> dict:
        return {
            "actor": self.roles.actor.state_dict(),
            "sampler": self.sampler.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "data": self.stream.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.roles.actor.load_state_dict(state["actor"])
        self.sampler.load_state_dict(state["sampler"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.stream.load_state_dict(state["data"])
