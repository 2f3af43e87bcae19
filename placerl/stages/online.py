"""The online stage: ppo, grpo, rloo, online_dpo, rso and brain through one experience pipeline.

Prompts come from ``prompt_data``, the roles from ``build_runtime`` (in this process, or on Ray
workers as the Plan places them), and the algorithm (``ALGORITHMS``) is an ``experience`` /
``learn`` pair that declares what it needs (``algos.online.Needs``); the pipeline samples for
it, within ``placement.max_staleness`` of the trained policy or from the frozen initial one.
"""

from __future__ import annotations

from collections.abc import Callable

from placerl.algos.brain import BRAIn
from placerl.algos.grpo import GroupPolicyOptimization
from placerl.algos.online import Algorithm
from placerl.algos.online_dpo import OnlineDPO
from placerl.algos.pair_training import pair_objective
from placerl.algos.ppo import PPO
from placerl.algos.rso import RSO
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.evaluation import evaluate_policy
from placerl.roles.build import episode_setup, response_budget
from placerl.runtime import build_runtime
from placerl.runtime.pipeline import build_pipeline, staleness_config
from placerl.stages.episodes import evaluate_episodes
from placerl.stages.sources import model_path, prompt_data, tokenizer_and_policy


def _grpo(cfg: RunConfig) -> Algorithm:
    return GroupPolicyOptimization(
        cfg.grpo,
        cfg.stage,
        cfg.rollout.samples_per_prompt,
        is_cap=staleness_config(cfg).is_cap,  # used only on stale samples
        generation_budget=response_budget(cfg),
    )


def _ppo(cfg: RunConfig) -> Algorithm:
    is_cap = staleness_config(cfg).is_cap
    budget, samples = response_budget(cfg), cfg.rollout.samples_per_prompt
    return PPO(cfg.ppo, is_cap=is_cap, generation_budget=budget, samples_per_prompt=samples)


def _online_dpo(cfg: RunConfig) -> Algorithm:
    n, pairs = cfg.rollout.samples_per_prompt, cfg.online_dpo.pairs_per_prompt
    if n < 2:
        raise UserError(
            f"online_dpo compares samples of one prompt: expected >= 2, got {n}",
            where="rollout.samples_per_prompt",
        )
    if pairs > n // 2:
        raise UserError(
            f"{pairs} pairs need 2 samples each, but rollout.samples_per_prompt is {n}: "
            f"expected at most {n // 2}",
            where="online_dpo.pairs_per_prompt",
        )
    return OnlineDPO(cfg.online_dpo, pair_objective(cfg.preference), n)


def _brain(cfg: RunConfig) -> Algorithm:
    # proposal sft: the prior is the proposal, unless a different reference is named
    return BRAIn(cfg.brain, cfg.brain.proposal == "policy" or cfg.reference is not None)


ALGORITHMS: dict[str, Callable[[RunConfig], Algorithm]] = {
    "ppo": _ppo,
    "grpo": _grpo,
    "rloo": _grpo,
    "online_dpo": _online_dpo,
    "rso": lambda cfg: RSO(cfg.rso, pair_objective(cfg.preference), seed=cfg.seed),
    "brain": _brain,
}


def make_algorithm(cfg: RunConfig) -> Algorithm:
    return ALGORITHMS[cfg.stage](cfg)


class OnlineStage:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.name = cfg.stage
        self.algorithm = make_algorithm(cfg)  # config errors before any model loads
        self.tokenizer, self.policy = tokenizer_and_policy(cfg)
        self.prompts, self.eval_prompts, self.stream = prompt_data(cfg, self.tokenizer)
        needs = self.algorithm.needs
        self.runtime = build_runtime(cfg, model_path(cfg), self.tokenizer, self.policy, needs)
        self.roles = self.runtime.roles
        self.pipeline = build_pipeline(cfg, self.algorithm, self.runtime, self.next_prompts)
        # episodes (env:): evaluated as episodes, with the environment and scorer of training
        self.episodes = episode_setup(cfg, self.tokenizer) if cfg.env.enabled else None

    def next_prompts(self):
        return self.prompts.batch(
            self.stream.next_batch(),
            self.tokenizer.pad_token_id,
            self.algorithm.needs.samples_per_prompt,
        )

    def step(self, step: int, timer) -> dict[str, float]:
        metrics = self.pipeline.step(step, timer)
        timer.add_spans(self.runtime.pop_spans())  # the workers' phases, for the timeline
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Greedy held-out responses: ``eval/reward`` (the run's reward function or model,
        so prompts without answers are measured too), ``eval/accuracy`` with an ``answer``
        column, and a few samples."""
        if self.eval_prompts is None:
            return {}
        if self.episodes is not None:  # on the controller's copy of the policy
            self.runtime.pull_weights()
            return evaluate_episodes(
                self.cfg,
                self.policy,
                self.tokenizer,
                self.eval_prompts,
                self.episodes,
                self.roles.reward,
            )
        sampler = self.runtime.policy_sampler()  # on the workers, where the policy lives
        if sampler is None:
            self.runtime.pull_weights()
        return evaluate_policy(
            self.policy,
            self.tokenizer,
            self.eval_prompts,
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            stop_strings=tuple(self.cfg.rollout.stop_strings),
            reward=self.roles.reward,
            num_samples=self.cfg.trainer.log_samples,
            precision=self.cfg.model.precision,
            sampler=sampler,
        )

    def trained_models(self) -> dict:
        self.runtime.pull_weights()
        models = {"policy": self.policy}
        if self.roles.critic is not None:
            models["critic"] = self.roles.critic.model
        return models

    def state_dict(self) -> dict:
        roles = self.roles
        state = {
            "pipeline": self.pipeline.state_dict(),  # first: it waits for the batch in flight
            "actor": roles.actor.state_dict(),
            "rollout": roles.rollout.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "data": self.stream.state_dict(),
        }
        if roles.critic is not None:
            state["critic"] = roles.critic.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.runtime.push_weights()  # the restored weights, to the workers (Ray runtime)
        self.pipeline.load_state_dict(state.get("pipeline"))
        self.roles.actor.load_state_dict(state["actor"])
        self.roles.rollout.load_state_dict(state["rollout"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.stream.load_state_dict(state["data"])
        if self.roles.critic is not None:
            self.roles.critic.load_state_dict(state["critic"])

    def close(self) -> None:
        """Stop the pipeline's thread and the runtime's workers (nothing to do locally)."""
        self.pipeline.close()
        self.runtime.close()
