"""Running the model's tool calls: concurrently, each in its own worker thread, each bounded
by a timeout; every failure becomes the text the model reads next, with a status to count.

| what went wrong                              | status     | metric          |
|----------------------------------------------|------------|-----------------|
| the tool raised                              | ``error``  | env/tool_errors |
| it returned something other than ``str``     | ``error``  | env/tool_errors |
| it ran past ``timeout_s``                    | ``timeout``| env/timeouts    |
| malformed JSON, unknown name, wrong arguments, too many calls in one turn | ``bad_call`` | env/bad_calls |

Why a fresh daemon thread per call rather than a ``ThreadPoolExecutor``: a Python thread cannot
be killed, and a pool's workers are joined when the interpreter exits, so one tool that hangs
forever would hang the trainer at exit. A daemon thread is abandoned after its timeout (it
runs on, harmless, until it returns or the process ends).
A tool that must be killable belongs in a subprocess of its own making.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import Enum
from typing import Any

from placerl.rollout.tools.parsing import BadCall, HermesParser, ToolCall, ToolCallParser
from placerl.rollout.tools.schema import Tool, as_tool


class Status(str, Enum):
    OK = "ok"
    ERROR = "error"  # the tool raised, or returned non-text
    TIMEOUT = "timeout"  # the tool ran past its timeout
    BAD_CALL = "bad_call"  # malformed call, unknown tool, arguments that do not fit


@dataclass(frozen=True)
class ToolOutcome:
    """One call and what came of it: ``content`` is the text the model reads (the result, or
    what went wrong), ``seconds`` the call's wall time (0 when it never ran)."""

    name: str | None  # None: the call's name could not be read
    arguments: dict[str, Any] | None
    status: Status
    content: str
    seconds: float = 0.0

    def message(self) -> dict[str, str]:
        """The ``role: tool`` message the chat template renders."""
        return {"role": "tool", "name": self.name or "", "content": self.content}


@dataclass(frozen=True)
class Ran:
    """What a call did on its thread: its value or exception, and its own wall time."""

    value: Any
    error: BaseException | None
    seconds: float


def in_daemon_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """``fn(*args, **kwargs)`` started now on a daemon thread; its future holds a ``Ran`` (the
    future itself never fails: the function's exception is data)."""
    future: Future = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        start = time.monotonic()
        try:
            value, error = fn(*args, **kwargs), None
        except BaseException as err:  # noqa: BLE001 (the tool's failure is data)
            value, error = None, err
        future.set_result(Ran(value, error, time.monotonic() - start))

    threading.Thread(target=run, name="placerl-tool", daemon=True).start()
    return future


class ToolBox:
    """The tools an episode may call, the parser of its calls, and their limits."""

    def __init__(
        self,
        tools: Sequence[Callable[..., Any] | Tool],
        *,
        timeout_s: float = 10.0,
        max_calls: int = 8,
        max_result_chars: int = 4000,
        parser: ToolCallParser | None = None,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s}: expected a number > 0")
        self.tools = {t.name: t for t in map(as_tool, tools)}
        self.timeout_s, self.max_calls = timeout_s, max_calls
        self.max_result_chars = max_result_chars
        self.parser = parser or HermesParser()

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema for t in self.tools.values()]

    def run(self, calls: Sequence[ToolCall | BadCall]) -> list[ToolOutcome]:
        """Every call started at once; the results in call order, within about ``timeout_s``."""
        started: list[ToolOutcome | tuple[ToolCall, Future, float]] = []
        for index, call in enumerate(calls):
            refused = self._refusal(call, index)
            if refused is not None:
                started.append(refused)
                continue
            kwargs = self.tools[call.name].bind(call.arguments).arguments
            started.append(
                (call, in_daemon_thread(self.tools[call.name].fn, **kwargs), time.monotonic())
            )
        return [s if isinstance(s, ToolOutcome) else self._finish(*s) for s in started]

    def _refusal(self, call: ToolCall | BadCall, index: int) -> ToolOutcome | None:
        """A bad-call outcome for a call that must not run, else None."""
        if isinstance(call, BadCall):
            return ToolOutcome(
                None, None, Status.BAD_CALL, f"error: malformed tool call: {call.reason}"
            )
        if index >= self.max_calls:
            why = f"error: too many tool calls in one turn (at most {self.max_calls})"
            return ToolOutcome(call.name, call.arguments, Status.BAD_CALL, why)
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            why = f"error: unknown tool {call.name!r} (available: {known})"
            return ToolOutcome(call.name, call.arguments, Status.BAD_CALL, why)
        try:
            tool.bind(call.arguments)
        except TypeError as err:
            why = f"error: wrong arguments for {call.name}: {err}"
            return ToolOutcome(call.name, call.arguments, Status.BAD_CALL, why)
        return None

    def _finish(self, call: ToolCall, future: Future, start: float) -> ToolOutcome:
        remaining = max(0.0, start + self.timeout_s - time.monotonic())
        try:
            ran: Ran = future.result(timeout=remaining)
        except FutureTimeout:
            why = f"error: {call.name} timed out after {self.timeout_s:g} s"
            return ToolOutcome(call.name, call.arguments, Status.TIMEOUT, why, self.timeout_s)
        result, seconds = ran.value, ran.seconds
        if ran.error is not None:
            why = f"error: {call.name} raised {type(ran.error).__name__}: {ran.error}"
            return ToolOutcome(call.name, call.arguments, Status.ERROR, why, seconds)
        if not isinstance(result, str):
            why = f"error: {call.name} returned {type(result).__name__}, expected str"
            return ToolOutcome(call.name, call.arguments, Status.ERROR, why, seconds)
        return ToolOutcome(call.name, call.arguments, Status.OK, self._cut(result), seconds)

    def _cut(self, text: str) -> str:
        if len(text) <= self.max_result_chars:
            return text
        return text[: self.max_result_chars] + "...(truncated)"
