"""The ``env:`` section: multi-turn episodes with tools or an environment of the user's.

Set ``env.tools`` (a list of ``module:function``, each a plain Python function with type hints
and a docstring) for the common case: the model may call them, a turn without a call is its
answer. Set ``env.factory`` (``module:factory``, called with the run's limits, returning an
``Environment``: ``reset(row)``, ``step(assistant_message)``; see placerl/rollout/envs/) for
anything else. Neither: single-turn sampling, as before. Names are imported like
``reward.function``: from the current directory first, then PYTHONPATH and installed packages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from placerl.config.section import Section

EpisodeReward = Literal["env", "function", "model"]


class EpisodeExpectation(Section):
    """What the planner assumes of a batch of episodes (``plan --auto``, ``strategy: auto``):
    nothing here changes how episodes run. Unset lengths take their bounds (an untrained policy
    runs to them), as the response length of single-turn sampling takes
    ``rollout.max_new_tokens``; set them from a run's ``env/*`` metrics for a closer estimate
    (``strategy: auto`` takes the means its run measures when it re-plans)."""

    turns: float | None = Field(
        None, gt=0, description="Mean model turns per episode (env/turns); null: env.max_turns."
    )
    slowest_turns: int | None = Field(
        None,
        gt=0,
        description="Turns of a batch's slowest episode: the sampling rounds a batch takes "
        "(the long tail); null: env.max_turns.",
    )
    turn_tokens: float | None = Field(
        None,
        gt=0,
        description="Mean model tokens per turn (env/tokens_model / env/turns); null: "
        "rollout.max_new_tokens.",
    )
    slowest_turn_tokens: float | None = Field(
        None,
        gt=0,
        description="Decode steps of a sampling round: its slowest turn's tokens (a batched "
        "call decodes until its last row ends); null: rollout.max_new_tokens.",
    )
    observation_tokens: float = Field(
        32.0,
        ge=0,
        description="Tokens appended per observation (the tool turn plus the next generation "
        "prompt; env/tokens_observation / (env/turns − 1)).",
    )
    tool_s: float = Field(
        0.0,
        ge=0,
        description="Seconds a round waits on its environment steps before the next turn (the "
        "slowest tool call of a round; env/step_s). 0: tools as quick as a Python function; "
        "set it for tools that call a service, a sandbox or a compiler.",
    )


class EnvConfig(Section):
    factory: str | None = Field(
        None,
        description="'module:factory' called as factory(limits) -> Environment (reset(row) -> "
        "first messages; step(assistant message) -> StepResult(observation, reward, done)); "
        "null: the tool environment over env.tools, or no episodes.",
    )
    tools: list[str] = Field(
        default_factory=list,
        description="Tools as 'module:function' (type hints + a docstring with Args: give the "
        "JSON schema the chat template renders); the model calls them in <tool_call> JSON and "
        "reads each result as a role: tool message. Not with env.factory.",
    )
    reward: EpisodeReward | None = Field(
        None,
        description="What scores an episode: env (the environment's rewards, summed), function "
        "(reward.function, or the builtin exact match, called with the final answers as "
        "completions and conversations=[messages]), model (reward.model over the tokens). "
        "null: env with env.factory, else model with reward.model, else function.",
    )
    parser: str = Field(
        "hermes",
        description="How env.tools calls are read from the model's text: hermes "
        "(<tool_call>{json}</tool_call>, Qwen's format) or 'module:factory' returning a parser "
        "with parse(text) -> ParsedTurn.",
    )
    system: str | None = Field(
        None, description="A system message before each prompt (env.tools only)."
    )
    max_turns: int = Field(4, gt=0, description="Most model turns per episode.")
    max_tokens: int = Field(
        512,
        gt=0,
        description="Most tokens after the first prompt, model and observation tokens together "
        "(the response width in training); rollout.max_new_tokens bounds each turn.",
    )
    tool_timeout_s: float = Field(
        10.0, gt=0, description="Per tool call; past it the model reads a timeout error."
    )
    step_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Per environment step (all of a turn's calls); past it the episode ends.",
    )
    max_calls_per_turn: int = Field(
        8, gt=0, description="Tool calls past this in one turn are refused (bad calls)."
    )
    max_result_chars: int = Field(4000, gt=0, description="A longer tool result is cut.")
    gather_s: float = Field(
        0.005,
        ge=0,
        description="After the first environment step of a round finishes, wait this long for "
        "others before sampling the ready episodes' next turns together.",
    )
    expect: EpisodeExpectation = Field(
        default_factory=EpisodeExpectation,
        description="The planner's estimate of a batch of episodes (turns, tokens, tool time).",
    )

    @field_validator("tools", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value  # an override of env.factory clears the list

    @model_validator(mode="after")
    def _one_source(self) -> EnvConfig:
        if self.factory and self.tools:
            raise ValueError(
                "give env.factory or env.tools, not both (a factory builds its own tools; "
                "placerl.rollout.envs.tool_env_factory makes one from a list)"
            )
        if self.reward == "env" and self.tools:
            raise ValueError(
                "env.reward: env needs an environment that gives rewards (env.factory); the "
                "tool environment of env.tools has none: use env.reward: function (reward."
                "function over the conversation) or model"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Episodes (multi-turn, with an environment) rather than one response per prompt."""
        return bool(self.factory or self.tools)

    def reward_source(self, reward_model: str | None) -> EpisodeReward:
        """``reward`` resolved (its description)."""
        if self.reward is not None:
            return self.reward
        if self.factory:
            return "env"
        return "model" if reward_model else "function"

    def limits(self):
        from placerl.rollout.envs.protocol import EpisodeLimits

        return EpisodeLimits(
            max_turns=self.max_turns,
            max_tokens=self.max_tokens,
            tool_timeout_s=self.tool_timeout_s,
            step_timeout_s=self.step_timeout_s,
            max_calls_per_turn=self.max_calls_per_turn,
            max_result_chars=self.max_result_chars,
        )
