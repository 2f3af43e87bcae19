"""A tool and an environment written from scratch, for ``env.tools`` and ``env.factory``.

A tool is a plain function with type hints and a docstring with ``Args:`` (its JSON schema
comes from them); the model calls it as ``<tool_call>{"name": ..., "arguments": {...}}
</tool_call>`` and reads the result as a ``role: tool`` message. An environment is anything
with ``tool_schemas``, ``reset(row)`` and ``step(assistant_message)``, made by a factory.
"""

from placerl.rollout.envs import StepResult, prompt_messages


def reverse(text: str) -> str:
    """Reverse a string.

    Args:
        text: the string to reverse
    """
    return text[::-1]


class Retry:
    """The model answers; a wrong answer gets "try again" and another turn, a right one ends
    the episode with reward 1 (fewer turns: the same reward, fewer tokens)."""

    tool_schemas = ()  # no tools: the observations are the environment's own messages

    def reset(self, row):
        self.answer = row["answer"]
        return prompt_messages(row)  # the row's prompt as the first user message

    def step(self, assistant):
        if assistant["content"].strip() == self.answer:
            return StepResult(reward=1.0, done=True)
        return StepResult(observation=({"role": "user", "content": "try again"},))


def retry_env(limits):
    return Retry()
