"""What one RL step does, in the numbers the cost model needs: a ``Workload``.

Built from a run config (``workload_from_config``) or by hand (benchmarks, tests, ``--cluster``
what-ifs). Lengths are *expected* tokens: the response length defaults to
``rollout.max_new_tokens`` (an upper bound; an untrained policy runs to it), the prompt length
to the mean of the first prompts of the training file under the model's tokenizer, or half of
``data.max_prompt_len`` when they cannot be read. Fields that other parts of placerl may add
(micro-batch size, gradient checkpointing, LoRA rank, the engine) are read from their sections.
The preference stages that sample (online DPO, RSO, BRAIn) run the same phases — sampling,
scoring, the reference, the update — with their own rows (``stage_shape``).

Multi-turn episodes (``env:``) add an ``EpisodeShape`` (``episode_shape``: turns, tokens per
turn and per observation, tool seconds, from ``env.expect`` or its bounds): generation becomes
rounds of decode, tool waits and observation prefills (``cost/episodes.py``), and the trained
rows are as wide as the slowest episode. DAPO's dynamic sampling samples and scores up to
``dapo.dynamic_sampling.max_rounds`` batches a step (``generation_rounds``): the planner charges
the cap, what a policy whose groups mostly tie (an untrained one, hard prompts) pays.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from placerl.config.schema import CRITIC_FREE
from placerl.placement.cost.offline import OFFLINE_STAGES, offline_rows
from placerl.placement.cost.shapes import ModelShape, model_shape, shape_from_dir, tiny_default
from placerl.placement.plan.config import needed_roles, uses_rule_reward
from placerl.types import Role


@dataclass(frozen=True)
class EpisodeShape:
    """A batch of multi-turn episodes, as the cost model sees it (``env.expect``'s fields)."""

    turns: float  # mean model turns per episode
    rounds: int  # sampling rounds of a batch: its slowest episode's turns
    turn_tokens: float  # mean model tokens per turn
    round_tokens: float  # decode steps of a round: its slowest turn's tokens
    observation_tokens: float  # tokens appended per observation (KV cache kept)
    tool_s: float  # seconds a round waits on its environment steps

    @property
    def tool_wait_s(self) -> float:
        """Seconds a batch's generation idles on tools: every round but the last waits."""
        return max(0, self.rounds - 1) * self.tool_s


@dataclass(frozen=True)
class Workload:
    stage: str
    roles: tuple[Role, ...]
    shapes: dict[Role, ModelShape]  # the model of every role with one (not a rule reward)
    prompts: int  # distinct prompts per step (trainer.batch_size)
    samples: int = 1  # responses per prompt
    prompt_len: float = 16.0
    response_len: float = 32.0
    epochs: int = 1
    minibatches: int = 1
    micro_batch: int | None = None  # rows per forward/backward on a worker; None: its share
    checkpointing: bool = False  # gradient checkpointing of every block
    gen_waves: int = 1  # generation in this many sequential waves of rows (KV cache / waves)
    gen_tp: int = 1  # tensor-parallel degree of each generation engine (vLLM-class only)
    precision: str = "fp32"  # fp32, or bf16 (autocast on CPU; bf16 compute on GPU)
    lora_rank: int = 0
    engine: str = "placerl"  # placerl's sampler or a vLLM-class engine (GPU what-ifs)
    rule_reward: bool = True
    max_staleness: int = 0
    sync_every: int = 1
    recompute: str = "stale"  # staleness.recompute_log_probs
    sync_bucket_mb: float = 64.0  # staleness.sync_bucket_mb: a weight broadcast's buffer
    offload: bool = False
    # the update's rows where they are not the rollout's (online DPO, RSO: the pairs, each a
    # prompt with two responses); None: the rollout's prompts and samples
    train_prompts: int | None = None
    train_samples: int | None = None
    reference: str = "all"  # the reference's rows: all (the rollout's), train (pairs), none
    episodes: EpisodeShape | None = None  # multi-turn episodes (env:), or one response a prompt
    gen_rounds: int = 1  # batches sampled and scored a step (DAPO's dynamic sampling: its cap)
    # offline stages (placement/cost/offline.py): the share of steps whose reference forward
    # runs (a cached DPO reference: the first epoch's), and rows never split (a pair: 2)
    reference_share: float = 1.0
    unit_rows: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.prompts * self.samples

    @property
    def single_pass(self) -> bool:
        """1 epoch × 1 minibatch: π_old comes from the update's own forward."""
        return self.epochs * self.minibatches == 1

    @property
    def dtype_bytes(self) -> int:
        """Bytes of activations, KV cache and frozen weights."""
        return 2 if self.precision == "bf16" else 4

    def with_(self, **changes: Any) -> Workload:
        return replace(self, **changes)

    @property
    def learning(self) -> Workload:
        """The workload of the update (and of π_old): the pairs' rows for online DPO and RSO,
        the rollout's otherwise."""
        if self.train_prompts is None and self.train_samples is None:
            return self
        return replace(
            self,
            prompts=self.train_prompts or self.prompts,
            samples=self.train_samples or self.samples,
            train_prompts=None,
            train_samples=None,
        )

    @property
    def offline(self) -> bool:
        """sft, rm, dpo: an update on fixed examples, no rollout (``cost/offline.py``)."""
        return self.stage in OFFLINE_STAGES

    @property
    def policy_gradient(self) -> bool:
        """PPO and the critic-free policy-gradient stages (GRPO, RLOO, DAPO, REINFORCE++): a
        clipped ratio to π_old (the preference stages' losses need none)."""
        return self.stage in ("ppo", *CRITIC_FREE)

    @property
    def referenced(self) -> Workload | None:
        """The workload of the reference's forward (None: the stage has none)."""
        return {"all": self, "train": self.learning}.get(self.reference)


def _first_prompts(cfg: Any, limit: int) -> list[dict]:
    """The first ``limit`` rows of ``data.train``, or of the built-in task's training split."""
    if cfg.data.train == "builtin":
        from placerl.tasks.addition import AdditionTask
        from placerl.tasks.reversal import ReversalTask

        d = cfg.data
        task = (
            AdditionTask(carry_noise=d.builtin_noise)
            if d.builtin_task == "addition"
            else ReversalTask(noise=d.builtin_noise)
        )
        return task.prompt_rows(limit, seed=cfg.seed)
    from placerl.data.formats import load_prompt_dataset

    rows = load_prompt_dataset(cfg.data.train)
    return [rows[i] for i in range(min(limit, len(rows)))]


def expected_prompt_len(cfg: Any, limit: int = 64) -> float:
    """Mean tokens of the first ``limit`` prompts of ``data.train`` (any prompt format, or the
    built-in task's) under the policy's tokenizer, encoded as the run encodes them; half of
    ``data.max_prompt_len`` when they cannot be read (or are longer than it)."""
    fallback = cfg.data.max_prompt_len / 2
    tokenizer_dir = cfg.model.tokenizer or cfg.model.path
    if not tokenizer_dir or not Path(tokenizer_dir).is_dir():
        return fallback
    try:
        from placerl.data.collate import encode_prompts
        from placerl.data.formats import prompt_rows
        from placerl.models.loading import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir)
        texts = prompt_rows(_first_prompts(cfg, limit), tokenizer)
        ids = encode_prompts(tokenizer, texts, cfg.data.max_prompt_len)
        return sum(map(len, ids)) / max(1, len(ids))
    except Exception:  # unreadable data or tokenizer: the estimate is only an estimate
        return fallback


def policy_shape(cfg: Any) -> ModelShape:
    """The policy's shape: ``model.path``'s (an adapter's base's), or, with ``model.path:
    null``, the tiny model the run builds in ``run_dir/base_model`` (read from there once
    built). A directory whose shape cannot be read is an error naming it."""
    if cfg.model.path is None:
        built = Path(cfg.run_dir) / "base_model"
        return shape_from_dir(built) or tiny_default()
    return model_shape(cfg.model.path)


def stage_shape(cfg: Any) -> dict[str, Any]:
    """How a stage's step is made, in the Workload's terms: responses per prompt, passes and
    optimizer steps, and for the preference stages which rows the update and the reference
    see (online DPO and RSO: pairs of one prompt's samples; BRAIn: every sample)."""
    stage = cfg.stage
    if stage == "online_dpo":
        c = cfg.online_dpo
        pairs = c.pairs_per_prompt
        return dict(
            samples=cfg.rollout.samples_per_prompt,
            epochs=c.epochs,
            minibatches=c.minibatches,
            train=(pairs, 2),
            reference="train",
        )
    if stage == "rso":
        c = cfg.rso
        pairs = c.num_accepted // 2 if c.ranking == "first_round" else c.num_accepted - 1
        return dict(
            samples=c.num_candidates,
            epochs=c.epochs,
            minibatches=c.minibatches,
            train=(pairs, 2),
            reference="train",
        )
    if stage == "brain":
        c = cfg.brain
        ref = c.proposal == "policy" or cfg.reference is not None
        return dict(
            samples=c.num_samples,
            epochs=c.epochs,
            minibatches=c.minibatches,
            train=None,
            reference="all" if ref else "none",
        )
    algo = cfg.ppo if stage == "ppo" else cfg.grpo
    return dict(
        samples=cfg.rollout.samples_per_prompt,
        epochs=algo.epochs,
        minibatches=algo.minibatches,
        train=None,
        reference="all",
    )


def workload_from_config(cfg: Any, roles: tuple[Role, ...] | None = None) -> Workload:
    """The Workload of a run config (its roles from ``needed_roles``)."""
    roles = roles or needed_roles(cfg)
    if cfg.stage in OFFLINE_STAGES:
        return offline_workload(cfg, roles)
    policy = policy_shape(cfg)
    value_dir = cfg.critic or cfg.reward.model
    value = (
        model_shape(value_dir, "critic" if cfg.critic else "reward.model") if value_dir else policy
    )
    shapes = {Role.ACTOR: policy, Role.ROLLOUT: policy, Role.REFERENCE: policy}
    shapes[Role.CRITIC] = value.as_value_model()
    if not uses_rule_reward(cfg):
        shapes[Role.REWARD] = model_shape(cfg.reward.model, "reward.model").as_value_model()
    how = stage_shape(cfg)
    prompts = cfg.trainer.batch_size
    pairs, per_pair = how["train"] or (None, None)
    episodes = episode_shape(cfg)
    return Workload(
        stage=cfg.stage,
        roles=roles,
        shapes={r: s for r, s in shapes.items() if r in roles},
        prompts=prompts,
        samples=how["samples"],
        prompt_len=expected_prompt_len(cfg),
        response_len=episode_width(cfg, episodes)
        if episodes
        else float(cfg.rollout.max_new_tokens),
        epochs=how["epochs"],
        minibatches=how["minibatches"],
        micro_batch=cfg.trainer.micro_batch_size,
        checkpointing=bool(cfg.model.gradient_checkpointing),
        precision=cfg.model.precision,
        lora_rank=int(cfg.model.lora.r) if cfg.model.lora else 0,
        engine=str(cfg.rollout.engine),
        rule_reward=uses_rule_reward(cfg),
        max_staleness=cfg.placement.max_staleness,
        # null: synced only when forced, i.e. every max_staleness updates
        sync_every=cfg.staleness.sync_every or max(1, cfg.placement.max_staleness),
        recompute=cfg.staleness.recompute_log_probs,
        sync_bucket_mb=cfg.staleness.sync_bucket_mb,
        offload=cfg.placement.offload,
        train_prompts=prompts * pairs if pairs else None,
        train_samples=per_pair,
        reference=how["reference"],
        episodes=episodes,
        gen_rounds=generation_rounds(cfg),
    )


def episode_shape(cfg: Any) -> EpisodeShape | None:
    """The episodes of ``cfg`` (``env.expect``, unset fields at their bounds); None without
    ``env:`` tools or a factory. The mean turns never exceed the slowest episode's."""
    env = cfg.env
    if not env.enabled:
        return None
    e, cap = env.expect, float(cfg.rollout.max_new_tokens)
    rounds = e.slowest_turns or env.max_turns
    return EpisodeShape(
        turns=min(float(e.turns or env.max_turns), rounds),
        rounds=rounds,
        turn_tokens=min(e.turn_tokens or cap, cap),
        round_tokens=min(e.slowest_turn_tokens or cap, cap),
        observation_tokens=e.observation_tokens,
        tool_s=e.tool_s,
    )


def episode_width(cfg: Any, e: EpisodeShape) -> float:
    """Tokens after the prompt of a batch's trained rows: as wide as its slowest episode
    (``rounds`` turns and the observations between them), at most ``env.max_tokens``."""
    width = e.rounds * e.round_tokens + (e.rounds - 1) * e.observation_tokens
    return float(min(width, cfg.env.max_tokens))


def generation_rounds(cfg: Any) -> int:
    """Batches sampled and scored a step: DAPO's dynamic sampling may take up to
    ``max_rounds`` (charged in full: module doc); one otherwise."""
    sampling = cfg.dapo.dynamic_sampling
    return sampling.max_rounds if cfg.stage == "dapo" and sampling.enabled else 1


def offline_workload(cfg: Any, roles: tuple[Role, ...]) -> Workload:
    """The Workload of an sft, rm or dpo config: the trained model's update over the batch
    (a value-head model for rm), and dpo's reference forward (``cost/offline.py``)."""
    policy = policy_shape(cfg)
    trained = policy.as_value_model() if cfg.stage == "rm" else policy
    shapes = {Role.ACTOR: trained, Role.REFERENCE: policy}
    return Workload(
        stage=cfg.stage,
        roles=roles,
        shapes={r: s for r, s in shapes.items() if r in roles},
        micro_batch=cfg.trainer.micro_batch_size,
        checkpointing=bool(cfg.model.gradient_checkpointing),
        precision=cfg.model.precision,
        lora_rank=int(cfg.model.lora.r) if cfg.model.lora else 0,
        rule_reward=False,
        **offline_rows(cfg),
    )
