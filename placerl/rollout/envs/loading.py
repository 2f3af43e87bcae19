"""Names in the config (``module:attribute``) turned into the user's environment factory and
tools, and the factory's first call checked: every failure here is one clear ``UserError``
(exit 2 at the CLI) naming the config key.

The import rule is ``reward.function``'s (roles/reward.py): the current working directory
first, then ``PYTHONPATH`` and installed packages.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from placerl.errors import UserError
from placerl.rollout.envs.protocol import EnvFactory, Environment, EpisodeLimits
from placerl.rollout.tools.schema import Tool, as_tool


def import_callable(spec: str, where: str) -> Callable[..., Any]:
    """The callable named ``module:attribute``; ``where`` is the config key in messages."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"expected 'module:attribute', got {spec!r}", where=where)
    cwd = os.getcwd()
    if cwd not in sys.path and os.path.realpath(cwd) not in map(os.path.realpath, sys.path):
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or module_name
        raise UserError(
            f"cannot import {module_name!r}: no module {missing!r} in the current directory "
            f"({cwd}), on PYTHONPATH or among installed packages",
            where=where,
        ) from None
    except (Exception, SystemExit) as err:  # the user's module failed while importing
        raise UserError(f"importing {module_name!r} raised {describe(err)}", where) from None
    value = getattr(module, attr, None)
    if not callable(value):
        raise UserError(f"{module.__file__ or module_name} has no callable {attr!r}", where)
    return value


def load_env_factory(spec: str, where: str = "env.factory") -> EnvFactory:
    return import_callable(spec, where)


def load_tools(specs: Sequence[str], where: str = "env.tools") -> list[Tool]:
    """Each ``module:function`` as a tool, its schema read from hints and docstring."""
    return [as_tool(import_callable(spec, where), where) for spec in specs]


def start_environment(factory: EnvFactory, limits: EpisodeLimits, where: str) -> Environment:
    """``factory(limits)``, checked: it must return an environment, and not fail."""
    try:
        env = factory(limits)
    except UserError:
        raise
    except (Exception, SystemExit) as err:
        raise UserError(f"the environment factory raised {describe(err)}", where) from err
    if not isinstance(env, Environment):
        raise UserError(
            f"the environment factory returned {type(env).__name__}, which is not an "
            f"environment (it needs tool_schemas, reset(row) and step(message))",
            where,
        )
    return env


def describe(err: BaseException) -> str:
    """``ValueError: boom``, ``SystemExit(3)``: an exception as the user would recognise it."""
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code!r})"
    return f"{type(err).__name__}: {err}"
