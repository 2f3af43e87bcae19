"""Environments and rewards the episode tests name in their configs (``module:attribute``).

``echo_env``: every model turn gets a tool observation back until the third, which the
environment rewards by its length (signal even for a random model) and ends: deterministic, so
episodes are the same wherever they run. The others fail in the ways a user's code can.
"""

from __future__ import annotations

from placerl.rollout.envs import EpisodeLimits, StepResult, prompt_messages

TURNS = 3


class Echo:
    tool_schemas = ()

    def __init__(self):
        self.turns = 0

    def reset(self, row):
        self.turns = 0
        return prompt_messages(row)

    def step(self, assistant):
        self.turns += 1
        if self.turns >= TURNS:
            return StepResult(reward=float(len(assistant["content"])), done=True)
        seen = str(len(assistant["content"]))
        return StepResult(observation=({"role": "tool", "name": "len", "content": seen},))


def echo_env(limits: EpisodeLimits) -> Echo:
    return Echo()


def failing_factory(limits: EpisodeLimits):
    raise RuntimeError("no sandbox available")


class _RaisingStep(Echo):
    def step(self, assistant):
        raise ValueError("the grader crashed")


def raising_step_env(limits: EpisodeLimits) -> Echo:
    return _RaisingStep()


def conversation_length(completions, prompts, conversations, **_) -> list[float]:
    """A reward over whole conversations: the characters of every message after the prompt."""
    return [float(sum(len(m["content"]) for m in c[1:])) for c in conversations]


def failing_reward(completions, **_) -> list[float]:
    raise ZeroDivisionError("bad reward")


def word_count(text: str) -> str:
    """Count the words of a text.

    Args:
        text: the text to count
    """
    return str(len(text.split()))


def not_a_tool(text):
    return text  # no type hints, no docstring: no schema


RESETS = [0]


class _KillingEcho(Echo):
    """``Echo`` that SIGKILLs its own process at the first step taken after the run's N-th
    episode started (``PLACERL_KILL_AFTER_RESETS``): a kill -9 in the middle of the batch of
    episodes that follows those N."""

    def reset(self, row):
        RESETS[0] += 1
        return super().reset(row)

    def step(self, assistant):
        import os
        import signal

        after = os.environ.get("PLACERL_KILL_AFTER_RESETS")
        if after is not None and RESETS[0] > int(after):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(assistant)


def killing_echo_env(limits: EpisodeLimits) -> Echo:
    return _KillingEcho()
