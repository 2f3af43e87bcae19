"""Online RL stages (ppo, grpo, rloo): prompts in, the algorithm's step, roles from the runtime."""

from __future__ import annotations

from placerl.algos.grpo import GroupPolicyOptimization
from placerl.algos.ppo import PPO
from placerl.config.schema import RunConfig
from placerl.evaluation import evaluate_policy
from placerl.models.loading import LoadOptions, load_policy, load_tokenizer
from placerl.models.lora import with_lora
from placerl.runtime import build_runtime
from placerl.runtime.pipeline import build_pipeline, staleness_config
from placerl.stages.sources import model_path, prompt_data


def make_algorithm(cfg: RunConfig):
    is_cap = staleness_config(cfg).is_cap  # used only on stale samples
    if cfg.stage == "ppo":
        return PPO(cfg.ppo, is_cap=is_cap, generation_budget=cfg.rollout.max_new_tokens)
    return GroupPolicyOptimization(
        cfg.grpo,
        cfg.stage,
        cfg.rollout.samples_per_prompt,
        is_cap=is_cap,
        generation_budget=cfg.rollout.max_new_tokens,
    )


class OnlineRLStage:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.name = cfg.stage
        path = model_path(cfg)
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or path, LoadOptions.of(cfg.model))
        self.policy = with_lora(load_policy(path, LoadOptions.of(cfg.model)), cfg.model.lora)
        self.algorithm = make_algorithm(cfg)
        self.prompts, self.eval_prompts, self.stream = prompt_data(cfg, self.tokenizer)
        self.runtime = build_runtime(cfg, path, self.tokenizer, self.policy, self.algorithm)
        self.pipeline = build_pipeline(cfg, self.algorithm, self.runtime, self.next_prompts)
        self.roles = self.pipeline.roles  # with a shadow rollout copy when samples may lag

    def next_prompts(self):
        return self.prompts.batch(
            self.stream.next_batch(),
            self.tokenizer.pad_token_id,
            self.cfg.rollout.samples_per_prompt,
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
        """Stop the runtime's workers (nothing to do for the local runtime)."""
        self.runtime.close()
