"""Name → function registries, so configs pick algorithm pieces by name (as veRL does).

ADVANTAGE_ESTIMATORS holds the outcome-score estimators, all ``(scores (N,), group_size) ->
(N,)``. GAE is not in it: it needs per-token rewards and values from a critic, so the PPO
algorithm calls ``core.compute_gae`` directly.

TOKEN_ADVANTAGE_ESTIMATORS hold critic-free estimators with per-token returns, all
``(scores (B,), mask (B, R), *, group_size, kl (B, R) | None, kl_coef, gamma) ->
(advantages (B, R), returns (B, R))``.

POLICY_LOSSES all take ``(log_probs, old_log_probs, advantages, mask, *, clip_low, clip_high,
agg, is_weights, norm)`` (all (B, R); see each for its defaults and its is_weights shape) and
return ``(loss, stats)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from placerl.algos import cispo, core, gspo, reinforce_pp

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

TOKEN_ADVANTAGE_ESTIMATORS: Registry[Callable] = Registry("token advantage estimator")
TOKEN_ADVANTAGE_ESTIMATORS.register("reinforce_pp")(reinforce_pp.reinforce_pp_advantages)
TOKEN_ADVANTAGE_ESTIMATORS.register("reinforce_pp_baseline")(
    reinforce_pp.reinforce_pp_baseline_advantages
)

POLICY_LOSSES: Registry[Callable] = Registry("policy loss")
POLICY_LOSSES.register("ppo_clip")(core.policy_loss_clipped)
POLICY_LOSSES.register("gspo")(gspo.gspo_loss)
POLICY_LOSSES.register("gspo_token")(gspo.gspo_token_loss)
POLICY_LOSSES.register("cispo")(cispo.cispo_loss)
