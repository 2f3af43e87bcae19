"""Environments for multi-turn episodes: the protocol, the tool-calling environment, and
loading the user's factory from the config."""

from placerl.rollout.envs.loading import load_env_factory, load_tools, start_environment
from placerl.rollout.envs.protocol import (
    EnvFactory,
    Environment,
    EpisodeLimits,
    Message,
    StepResult,
)
from placerl.rollout.envs.tool_env import ToolEnvironment, prompt_messages, tool_env_factory

__all__ = [
    "EnvFactory",
    "Environment",
    "EpisodeLimits",
    "Message",
    "StepResult",
    "ToolEnvironment",
    "load_env_factory",
    "load_tools",
    "prompt_messages",
    "start_environment",
    "tool_env_factory",
]
