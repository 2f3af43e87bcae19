"""Starting role calls that may run at the same time, without naming the runtime.

``submit(role, "score", ...)`` starts the call and returns something with ``.result()``. A
remote role (Ray runtime) offers ``score_async``, so calls to roles on disjoint workers run
concurrently (Interleave: the reference's log-probs while the reward model scores). A local
role has no ``*_async``: its call is deferred until ``.result()``, so it runs at the same
place in the phase order (and under the same timer phase) as a plain call would.
"""

from __future__ import annotations

from typing import Any, Protocol


class Future(Protocol):
    def result(self) -> Any: ...


class Deferred:
    """A local call run on first ``result()``; later calls return the same value."""

    def __init__(self, fn, args: tuple, kwargs: dict):
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._done, self._value = False, None

    def result(self) -> Any:
        if not self._done:
            self._value = self._fn(*self._args, **self._kwargs)
            self._done = True
        return self._value


def submit(role: Any, method: str, *args, **kwargs) -> Future:
    """Start ``role.method(*args, **kwargs)``: remotely now if the role can, else on demand."""
    launch = getattr(role, f"{method}_async", None)
    if launch is not None:
        return launch(*args, **kwargs)
    return Deferred(getattr(role, method), args, kwargs)
