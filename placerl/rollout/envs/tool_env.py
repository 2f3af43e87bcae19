"""The environment most tasks need: the model may call tools; a turn without a tool call is
its answer, which ends the episode and is scored by a reward over the whole conversation.

    def calc(expression: str) -> str:
        (docstring: "Evaluate an arithmetic expression." and an "Args:" section naming
        ``expression``; the schema is read from it and the type hints)
        return str(safe_eval(expression))

    def correct(messages, row) -> float:
        return float(messages[-1]["content"].strip() == row["answer"])

    make_env = tool_env_factory([calc], reward=correct)   # env.factory: mymodule:make_env
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from placerl.errors import UserError
from placerl.rollout.envs.protocol import EnvFactory, EpisodeLimits, Message, StepResult
from placerl.rollout.tools.execution import ToolBox
from placerl.rollout.tools.parsing import ToolCallParser
from placerl.rollout.tools.schema import Tool, as_tool

ConversationReward = Callable[[list[Message], Mapping[str, Any]], float]


class ToolEnvironment:
    """One episode: its conversation so far, its tools, its final reward (None: scored
    elsewhere, e.g. by the config's reward function over the conversation)."""

    def __init__(
        self,
        toolbox: ToolBox,
        reward: ConversationReward | None = None,
        system: str | None = None,
    ):
        self.toolbox, self.reward, self.system = toolbox, reward, system
        self.messages: list[Message] = []
        self.row: Mapping[str, Any] = {}

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        return self.toolbox.schemas

    def reset(self, row: Mapping[str, Any]) -> list[Message]:
        self.row = row
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.messages += prompt_messages(row)
        return list(self.messages)

    def step(self, assistant: Message) -> StepResult:
        self.messages.append(assistant)
        parsed = self.toolbox.parser.parse(assistant["content"])
        if not parsed.calls:
            reward = None if self.reward is None else float(self.reward(self.messages, self.row))
            return StepResult(reward=reward, done=True)
        outcomes = self.toolbox.run(parsed.calls)
        observation = tuple(o.message() for o in outcomes)
        self.messages += observation
        return StepResult(observation=observation, tool_calls=tuple(outcomes))


def prompt_messages(row: Mapping[str, Any]) -> list[Message]:
    """A row's ``prompt`` as chat messages: a string is one user turn."""
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, Mapping) for m in prompt):
        return [dict(m) for m in prompt]
    raise UserError(
        f"an environment's row needs a 'prompt' (a string or a list of messages), got "
        f"{type(prompt).__name__}",
        where="env",
    )


def tool_env_factory(
    tools: Sequence[Callable[..., Any] | Tool],
    reward: ConversationReward | None = None,
    *,
    system: str | None = None,
    parser: ToolCallParser | None = None,
) -> EnvFactory:
    """A factory of ``ToolEnvironment`` over ``tools``; their schemas are read now, so a tool
    without type hints or docstring is reported at start, not mid-run."""
    checked = [as_tool(t) for t in tools]

    def make(limits: EpisodeLimits) -> ToolEnvironment:
        toolbox = ToolBox(
            checked,
            timeout_s=limits.tool_timeout_s,
            max_calls=limits.max_calls_per_turn,
            max_result_chars=limits.max_result_chars,
            parser=parser,
        )
        return ToolEnvironment(toolbox, reward, system)

    return make
