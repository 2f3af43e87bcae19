"""The typed configuration of a run: one small model per concern, composed by ``RunConfig``.

Every field has a description (shown by ``placerl train --help-config``); unknown keys are
rejected with a suggestion by the loader. ``stage`` picks the algorithm; sections that a stage
does not use are ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from placerl.config.engine import VLLMConfig
from placerl.config.env import EnvConfig
from placerl.config.lora import LoraConfig
from placerl.config.placement import PlacementConfig
from placerl.config.policy import DAPOConfig, GRPOConfig, ReinforcePPConfig
from placerl.config.preference import BRAInConfig, OnlineDPOConfig, PreferenceConfig, RSOConfig
from placerl.config.section import Section
from placerl.config.staleness import StalenessConfig

Stage = Literal[
    "sft",
    "rm",
    "ppo",
    "grpo",
    "rloo",
    "dapo",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "dpo",
    "online_dpo",
    "rso",
    "brain",
]
# the critic-free policy-gradient stages: the `grpo:` section is their policy update
CRITIC_FREE = ("grpo", "rloo", "dapo", "reinforce_pp", "reinforce_pp_baseline")
GROUPED = ("grpo", "rloo", "dapo", "reinforce_pp_baseline")  # baselines from a prompt's group
OFFLINE_STAGES = ("sft", "rm", "dpo")  # fixed data: stages/offline.py
BUILTIN = "builtin"  # a data path that means "the built-in task" (data.builtin_task)
Tracker = Literal["tensorboard", "wandb"]


class ModelConfig(Section):
    path: str | None = Field(
        None, description="Local Hugging Face model directory; null builds the tiny default."
    )
    tokenizer: str | None = Field(None, description="Tokenizer directory; defaults to `path`.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="fp32, or bf16 mixed precision: trained models keep fp32 weights and "
        "optimizer state and compute in bf16 (autocast; FSDP2: bf16 params, fp32 reduce), "
        "sampling runs in bf16, frozen models (reference, reward model) are held in bf16.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each transformer block in backward instead of keeping its "
        "activations, for every trained model (less memory, ~30% more compute).",
    )
    lora: LoraConfig | None = Field(
        None,
        description="LoRA adapters (peft) on every trained model; null trains all weights "
        "(see placerl/config/lora.py).",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa",
        description="Attention kernel every model is loaded with: sdpa (PyTorch's fused "
        "attention), eager, or flash_attention_2 (needs the flash-attn package and a GPU).",
    )
    trust_remote_code: bool = Field(
        False,
        description="Run Python code shipped in the model/tokenizer directory (custom "
        "architectures); off by default, and said in the log when on.",
    )


class DataConfig(Section):
    train: str = Field(
        BUILTIN,
        description="Training data: a .jsonl/.json/.parquet/.csv file, or 'builtin' (the task "
        "named by builtin_task).",
    )
    eval: str | None = Field(
        None,
        description="Held-out data. sft/dpo/rm: a file of the training format (held-out loss; "
        "an `answer` column adds exact-match accuracy; sft also takes prompts with `answer`). "
        "RL stages: prompts (eval/reward; eval/accuracy with an `answer` column). "
        "null: the builtin eval split when data.train is builtin, else no evaluation.",
    )
    max_prompt_len: int = Field(
        512,
        gt=0,
        description="Longest prompt in tokens; longer: an error naming the row and the data's "
        "length percentiles (never truncated). 512, as TRL, fits most chat prompts.",
    )
    max_len: int = Field(
        1024,
        gt=1,
        description="Longest prompt+response for SFT/RM/DPO data (longer: see over_length). "
        "1024, as TRL; batches are padded to their longest row, not to this.",
    )
    over_length: Literal["truncate", "error"] = Field(
        "truncate",
        description="SFT examples longer than max_len: truncate cuts the completion to fit "
        "(the count is printed at start and logged as data/truncated); error refuses the "
        "data, naming the first such row.",
    )
    packing: Literal["auto", "off"] = Field(
        "auto",
        description="sft: auto lays several examples end to end in each row, positions "
        "restarting per example, where the model keeps them apart (checked once at start; flash "
        "attention's variable-length kernel on GPU, a block mask otherwise): no padding, the "
        "same loss; off: one example per row, padded. dpo always packs its pairs.",
    )
    num_eval: int = Field(256, ge=0, description="Held-out prompts to evaluate (0: no eval).")
    builtin_task: Literal["reversal", "addition"] = Field(
        "reversal", description="The built-in task behind data 'builtin' (see placerl/tasks)."
    )
    builtin_size: int = Field(20000, gt=0, description="Rows generated for the builtin task.")
    builtin_noise: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Builtin SFT data: the demonstrator's error rate where it errs (reversal: "
        "copies odd-first strings; addition: drops carries).",
    )


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Linear warm-up over the first n training steps (trainer.steps: the "
        "schedule advances once per step, however many minibatches and epochs it has).",
    )
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Decay after warm-up, to `min_lr_ratio`·lr at the last step."
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final lr as a share of `lr`.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; null: no clip.")


class RolloutConfig(Section):
    max_new_tokens: int = Field(32, gt=0, description="Most tokens sampled per response.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (training too).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling; 1.0 is off.")
    top_k: int = Field(0, ge=0, description="Top-k sampling; 0 is off.")
    stop_strings: list[str] = Field(default_factory=list, description="Stop after these strings.")
    samples_per_prompt: int = Field(
        1, gt=0, description="Responses sampled per prompt (the group size of GRPO/RLOO)."
    )
    engine: Literal["placerl", "vllm"] = Field(
        "placerl",
        description="Who samples: placerl's KV-cache sampler, or vLLM (pip install -e "
        "'.[vllm]'; the trainer then recomputes π_old and corrects the engine's μ with "
        "truncated importance weights, staleness.is_cap).",
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="rollout.engine: vllm.")


class PPOConfig(Section):
    epochs: int = Field(1, gt=0, description="Passes over each rollout batch.")
    minibatches: int = Field(1, gt=0, description="Optimizer steps per epoch (batch is split).")
    clip: float = Field(0.2, gt=0, description="Policy ratio clip ε (low side).")
    clip_high: float | None = Field(None, gt=0, description="Upper clip ε (DAPO); null: = clip.")
    value_clip: float | None = Field(0.2, gt=0, description="Value clip around old values.")
    vf_coef: float = Field(0.5, ge=0, description="Critic loss weight (separate optimizer).")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount γ.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ.")
    whiten_advantages: bool = Field(True, description="Normalize advantages over the batch.")
    kl_coef: float = Field(0.05, ge=0, description="KL penalty β (initial value if adaptive).")
    kl_controller: Literal["fixed", "adaptive"] = Field("fixed", description="KL β control.")
    kl_target: float = Field(
        6.0,
        gt=0,
        description="Adaptive controller's target KL in nats per response (kl/mean: summed over "
        "its tokens, averaged over the batch); 6 as Ziegler et al. 2019 and TRL.",
    )
    kl_horizon: int = Field(10000, gt=0, description="Adaptive controller's horizon.")
    kl_estimator: Literal["k1", "k2", "k3", "abs"] | None = Field(
        None,
        description="Per-token KL estimator; null: k1 in the reward, k3 as a loss "
        "(kl_in_reward: false, where k1 and abs are refused: their gradient does not regularise).",
    )
    kl_in_reward: bool = Field(
        True, description="KL as a reward penalty (InstructGPT); false: as a loss term."
    )
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight.")
    loss_agg: Literal[
        "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
    ] = Field("token-mean", description="How per-token losses become one number.")
    critic_lr: float | None = Field(None, gt=0, description="Critic learning rate; null: optim.lr.")
    critic_warmup_steps: int = Field(0, ge=0, description="Steps training only the critic.")


class RewardConfig(Section):
    function: str | None = Field(
        None,
        description="Rule reward 'module:function' called as fn(completions, prompts=..., "
        "**columns) -> list[float]; null with no model: the builtin exact-match reward.",
    )
    model: str | None = Field(
        None,
        description="Reward-model directory (scalar head); given as an override it replaces "
        "a reward.function set in the file (and the other way round).",
    )
    scale: float = Field(1.0, description="Multiply scores by this.")

    @model_validator(mode="after")
    def _one_source(self) -> RewardConfig:
        if self.function and self.model:
            raise ValueError(
                "give reward.function or reward.model, not both (an override of one on the "
                "command line replaces the other's value from the file)"
            )
        return self


class TrainerConfig(Section):
    steps: int = Field(100, gt=0, description="Training steps (one batch each).")
    batch_size: int = Field(32, gt=0, description="Prompts (RL) or examples (SFT/RM) per step.")
    micro_batch_size: int | None = Field(
        None,
        gt=0,
        description="Most sequences in one forward/backward of a trained model (gradients "
        "accumulate to the minibatch's, the same as one big pass); a preference pair counts 2 "
        "and is never split. Per data-parallel worker. null: the whole minibatch at once.",
    )
    max_tokens_per_micro_batch: int | None = Field(
        None,
        gt=0,
        description="Most real (non-padding) tokens in one forward/backward, so that long and "
        "short sequences pack well; with micro_batch_size, both limits hold. null: no limit.",
    )
    balance: Literal["tokens", "none"] = Field(
        "tokens",
        description="sft/rm/dpo: how a batch is dealt to data-parallel workers and their "
        "micro-batches. tokens: balanced by a workload estimate (tokens and tokens²), every "
        "worker the same number of micro-batches; none: contiguous shares cut in order. A "
        "preference pair is never split.",
    )
    eval_every: int = Field(0, ge=0, description="Evaluate every n steps (0: only at the end).")
    save_every: int = Field(50, ge=0, description="Checkpoint every n steps (0: only at the end).")
    keep_checkpoints: int = Field(2, gt=0, description="Most recent checkpoints kept.")
    progress: bool = Field(True, description="Show a progress bar.")
    max_bad_steps: int = Field(
        3,
        gt=0,
        description="Stop (exit 2) after this many consecutive steps whose update was skipped "
        "for a non-finite loss or gradient norm.",
    )
    report_to: list[Tracker] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Where metrics also go besides metrics.jsonl: tensorboard (run_dir/tb), "
        "wandb (needs `pip install placerl[wandb]`; WANDB_MODE=offline works without an "
        "account); [] for neither. The older trainer.tensorboard: true/false is still read.",
    )
    wandb_project: str | None = Field(
        None, description="W&B project; null: $WANDB_PROJECT, else 'placerl'."
    )
    log_samples: int = Field(
        4,
        ge=0,
        description="Held-out prompts whose responses each evaluation prints and writes to "
        "TensorBoard/W&B text and run_dir/samples.jsonl (0: none).",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_tensorboard(cls, data: Any) -> Any:
        """``tensorboard: bool`` (before ``report_to``) still works: adds or drops it there."""
        if isinstance(data, dict) and "tensorboard" in data:
            data = dict(data)
            flag = data.pop("tensorboard")
            if not isinstance(flag, bool):
                raise ValueError("trainer.tensorboard must be true or false (or use report_to)")
            trackers = [t for t in data.get("report_to", ["tensorboard"]) if t != "tensorboard"]
            data["report_to"] = (["tensorboard"] if flag else []) + trackers
        return data

    @model_validator(mode="after")
    def _unique_trackers(self) -> TrainerConfig:
        self.report_to = list(dict.fromkeys(self.report_to))
        return self


class RunConfig(Section):
    # keys of which one is chosen: an override of one clears the others the file sets
    exclusive_keys: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("reward.function", "reward.model"),
        ("env.factory", "env.tools"),
    )

    stage: Stage = Field(
        ...,
        description="What to train: sft, rm, ppo, grpo, rloo, dapo, reinforce_pp, "
        "reinforce_pp_baseline, dpo, online_dpo, rso, brain.",
    )
    run_dir: str = Field("runs/placerl", description="Where metrics, plots, checkpoints go.")
    seed: int = Field(
        0,
        ge=0,
        lt=2**32,
        description="Seed for data order, sampling and initialisation (0 to 2**32 - 1).",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    reference: str | None = Field(None, description="Reference model dir; null: = model.path.")
    critic: str | None = Field(None, description="Critic init dir; null: = reward.model or model.")
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    reinforce_pp: ReinforcePPConfig = Field(default_factory=ReinforcePPConfig)
    dapo: DAPOConfig = Field(default_factory=DAPOConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    online_dpo: OnlineDPOConfig = Field(default_factory=OnlineDPOConfig)
    rso: RSOConfig = Field(default_factory=RSOConfig)
    brain: BRAInConfig = Field(default_factory=BRAInConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    staleness: StalenessConfig = Field(default_factory=StalenessConfig)
    env: EnvConfig = Field(
        default_factory=EnvConfig,
        description="Multi-turn episodes with tools or an environment (online stages).",
    )

    @model_validator(mode="after")
    def _stage_needs(self) -> RunConfig:
        if not self.ppo.kl_in_reward and self.ppo.kl_controller == "adaptive":
            raise ValueError(
                "ppo.kl_controller: adaptive adjusts the KL *reward* penalty; with "
                "ppo.kl_in_reward: false use kl_controller: fixed"
            )
        self._kl_losses_regularise()
        self._episode_reward()
        lora = self.model.lora
        if lora is not None and lora.dropout > 0 and self.stage not in ("sft", "rm", "dpo"):
            raise ValueError(
                f"model.lora.dropout={lora.dropout}: {self.stage} compares log-probs of the same "
                "responses across passes (sampling, π_old, update), which dropout would make "
                "disagree; use model.lora.dropout=0"
            )
        offline_ok = ("local", "flatten", "auto")
        if self.stage in OFFLINE_STAGES and self.placement.strategy not in offline_ok:
            raise ValueError(
                f"stage {self.stage} trains one model data-parallel over every slot: placement."
                f"strategy {self.placement.strategy} places models apart; use placement.strategy: "
                "flatten (with placement.sharding none, full or hybrid), auto (the planner "
                "picks) or placement.strategy: local"
            )
        self._dapo_fits()
        if self.stage in GROUPED and self.rollout.samples_per_prompt < 2:
            raise ValueError(
                f"{self.stage} compares samples of one prompt: rollout.samples_per_prompt must be "
                f">= 2 (got {self.rollout.samples_per_prompt})"
            )
        return self

    def _episode_reward(self) -> None:
        """``env.reward`` names a reward source the config has, and no other one is set."""
        if not self.env.enabled:
            return
        source = self.env.reward_source(self.reward.model)
        if source == "model" and not self.reward.model:
            raise ValueError("env.reward: model needs reward.model (a reward-model directory)")
        given = {"function": self.reward.function, "model": self.reward.model}
        unused = [k for k, v in given.items() if v and k != source]
        if unused:
            raise ValueError(
                f"reward.{unused[0]} is set but episodes are scored by env.reward: {source}; "
                f"remove reward.{unused[0]} or set env.reward: {unused[0]}"
            )

    def _kl_losses_regularise(self) -> None:
        from placerl.algos.kl import kl_loss_refusal

        checks = [
            ("grpo", self.grpo.kl_coef > 0 and self.stage in ("grpo", "rloo", "dapo"), self.grpo),
            ("ppo", self.ppo.kl_coef > 0 and not self.ppo.kl_in_reward, self.ppo),
        ]
        for name, is_loss, section in checks:
            why = (
                kl_loss_refusal(section.kl_estimator) if is_loss and section.kl_estimator else None
            )
            if why:
                raise ValueError(f"{name}.kl_estimator: {why}")

    def _dapo_fits(self) -> None:
        overlong, budget = self.dapo.overlong, self.rollout.max_new_tokens
        if self.stage == "dapo" and overlong.shaping and self.dapo.cache_length(budget) > budget:
            raise ValueError(
                f"dapo.overlong.cache_length={overlong.cache_length}: the soft band lies inside "
                f"the generation budget, expected at most rollout.max_new_tokens ({budget})"
            )
