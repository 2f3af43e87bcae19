"""What one RL step does, in the numbers the cost model needs: a ``Workload``.

Built from a run config (``workload_from_config``) or by hand (benchmarks, tests, ``--cluster``
what-ifs). Lengths are *expected* tokens: the response length defaults to
``rollout.max_new_tokens`` (an upper bound; an untrained policy runs to it), the prompt length
to the mean of the first prompts of the training file under the model's tokenizer, or half of
``data.max_prompt_len`` when they cannot be read. Fields that other parts of placerl may add
later (micro-batch size, gradient checkpointing, LoRA rank, the engine) are read when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from placerl.placement.cost.shapes import ModelShape, shape_from_dir, tiny_default
from placerl.types import Role


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


def _get(cfg: Any, dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part, None)
        if cfg is None:
            return default
    return cfg


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
    path = cfg.model.path or Path(cfg.run_dir) / "base_model"
    return shape_from_dir(path) or tiny_default()


def workload_from_config(cfg: Any, roles: tuple[Role, ...] | None = None) -> Workload:
    """The Workload of a run config (its roles from ``needed_roles``)."""
    from placerl.placement.plan.config import needed_roles, uses_rule_reward

    roles = roles or needed_roles(cfg)
    policy = policy_shape(cfg)
    value_dir = cfg.critic or cfg.reward.model
    value = (shape_from_dir(value_dir) if value_dir else None) or policy
    shapes = {Role.ACTOR: policy, Role.ROLLOUT: policy, Role.REFERENCE: policy}
    shapes[Role.CRITIC] = value.as_value_model()
    if not uses_rule_reward(cfg):
        shapes[Role.REWARD] = (shape_from_dir(cfg.reward.model) or policy).as_value_model()
    algo = cfg.ppo if cfg.stage == "ppo" else cfg.grpo
    return Workload(
        stage=cfg.stage,
        roles=roles,
        shapes={r: s for r, s in shapes.items() if r in roles},
        prompts=cfg.trainer.batch_size,
        samples=cfg.rollout.samples_per_prompt,
        prompt_len=expected_prompt_len(cfg),
        response_len=float(cfg.rollout.max_new_tokens),
        epochs=algo.epochs,
        minibatches=algo.minibatches,
        micro_batch=_get(cfg, "trainer.micro_batch_size", None),
        checkpointing=bool(_get(cfg, "model.gradient_checkpointing", False)),
        precision=cfg.model.precision,
        lora_rank=int(_get(cfg, "model.lora.rank", 0) or 0),
        engine=str(_get(cfg, "rollout.engine", "placerl")),
        rule_reward=uses_rule_reward(cfg),
        max_staleness=cfg.placement.max_staleness,
        sync_every=cfg.staleness.sync_every,
        recompute=cfg.staleness.recompute_log_probs,
        sync_bucket_mb=cfg.staleness.sync_bucket_mb,
        offload=cfg.placement.offload,
    )
