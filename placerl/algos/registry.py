"""Name → function registries, so configs pick algorithm pieces by name (as veRL does).

ADVANTAGE_ESTIMATORS holds the outcome-score estimators, all ``(scores (N,), group_size) ->
(N,)``. GAE is not in it: it needs per-token rewards and values from a critic, so the PPO
algorithm calls ``core.compute_gae`` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from placerl.algos import core

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """A dict of named functions with a decorator to fill it and a helpful lookup error."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: ``@REG.register("name")``. Registering a name twice is an error."""

        def add(fn: F) -> F:
            if name in self._items:
                raise KeyError(f"{self.what} {name!r} is already registered")
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str) -> F:
        if name not in self._items:
            raise KeyError(f"unknown {self.what} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


ADVANTAGE_ESTIMATORS: Registry[Callable] = Registry("advantage estimator")
ADVANTAGE_ESTIMATORS.register("grpo")(core.grpo_advantages)
ADVANTAGE_ESTIMATORS.register("rloo")(core.rloo_advantages)
