"""Tools: schemas from plain functions, Hermes tool calls read back, and every failure of a
call turned into an observation with its status (never an exception, never a hang)."""

from __future__ import annotations

import json
import random
import string
import sys
import threading

import pytest

from placerl.errors import UserError
from placerl.rollout.envs import (
    EpisodeLimits,
    StepResult,
    ToolEnvironment,
    load_env_factory,
    load_tools,
    start_environment,
    tool_env_factory,
)
from placerl.rollout.tools import BadCall, HermesParser, Status, ToolBox, ToolCall, as_tool


def add(a: int, b: int) -> str:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return str(a + b)


def boom(x: str) -> str:
    """Always fails.

    Args:
        x: ignored
    """
    raise ValueError("boom")


def number(x: str) -> str:
    """Returns a number, not text.

    Args:
        x: ignored
    """
    return 42  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ schema


def test_a_tool_schema_comes_from_hints_and_docstring():
    tool = as_tool(add)
    assert tool.name == "add"
    assert tool.schema["function"]["parameters"]["required"] == ["a", "b"]
    assert tool.schema["function"]["parameters"]["properties"]["a"]["type"] == "integer"


def test_a_function_without_docstring_is_a_user_error_naming_it():
    def bare(x: int) -> str:
        return ""

    with pytest.raises(UserError, match="tool 'bare'.*docstring"):
        as_tool(bare)


# ----------------------------------------------------------------------------------- parsing


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.choice(
        ["str", "int", "float", "bool", "none", "list", "dict"][: 5 if depth > 1 else 7]
    )
    if kind == "str":
        alphabet = string.printable + "éü中<>{}\"'\\"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if kind == "int":
        return rng.randint(-(10**9), 10**9)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_the_hermes_parser_reads_back_every_call_it_is_given():
    rng, parser = random.Random(0), HermesParser()
    for _ in range(300):
        calls = [
            ToolCall(
                rng.choice(["add", "search", "calc_2", "x"]),
                {f"a{i}": _random_value(rng) for i in range(rng.randint(0, 3))},
            )
            for _ in range(rng.randint(0, 3))
        ]
        texts = ["some text ", "\n", ""]
        text = rng.choice(texts)
        for call in calls:
            body = json.dumps(
                {"name": call.name, "arguments": call.arguments},
                ensure_ascii=rng.random() < 0.5,
                indent=rng.choice([None, 2]),
            )
            text += f"<tool_call>{rng.choice(['', chr(10)])}{body}{rng.choice(['', chr(10)])}</tool_call>{rng.choice(texts)}"
        parsed = parser.parse(text)
        assert parsed.calls == tuple(calls)
        assert "<tool_call>" not in parsed.content


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"name": "add", "arguments": {"a": 1,}}', "not valid JSON"),
        ('["add"]', 'string "name"'),
        ('{"arguments": {}}', 'string "name"'),
        ('{"name": "add", "arguments": [1, 2]}', "must be a JSON object"),
        ('{"name": "add", "arguments": "{oops"}', "string that is not JSON"),
    ],
)
def test_a_malformed_call_is_kept_as_a_bad_call_with_its_reason(body, reason):
    (call,) = HermesParser().parse(f"ok <tool_call>{body}</tool_call>").calls
    assert isinstance(call, BadCall) and reason in call.reason


def test_arguments_written_as_a_json_string_are_read():
    body = json.dumps({"name": "add", "arguments": json.dumps({"a": 1, "b": 2})})
    assert HermesParser().parse(f"<tool_call>{body}</tool_call>").calls == (
        ToolCall("add", {"a": 1, "b": 2}),
    )


def test_a_call_never_closed_is_a_bad_call():
    parsed = HermesParser().parse('answer <tool_call>{"name": "add", "argu')
    assert parsed.content == "answer"
    assert isinstance(parsed.calls[0], BadCall) and "without </tool_call>" in parsed.calls[0].reason


# --------------------------------------------------------------------------------- execution


def test_every_failure_of_a_call_is_an_observation_with_its_status():
    box = ToolBox([add, boom, number], timeout_s=5.0, max_calls=5)
    calls = [
        ToolCall("add", {"a": 2, "b": 3}),
        ToolCall("boom", {"x": "y"}),
        ToolCall("number", {"x": "y"}),
        ToolCall("nope", {}),
        ToolCall("add", {"a": 1}),
        BadCall("{", "not valid JSON"),
    ]
    out = box.run(calls)
    assert [o.status for o in out] == [
        Status.OK,
        Status.ERROR,
        Status.ERROR,
        Status.BAD_CALL,
        Status.BAD_CALL,
        Status.BAD_CALL,
    ]
    assert out[0].content == "5"
    assert "raised ValueError: boom" in out[1].content
    assert "returned int, expected str" in out[2].content
    assert "unknown tool 'nope' (available: add, boom, number)" in out[3].content
    assert "wrong arguments for add" in out[4].content
    assert "malformed tool call" in out[5].content
    assert all(o.message()["role"] == "tool" for o in out)


def test_calls_past_the_per_turn_limit_are_refused():
    out = ToolBox([add], max_calls=2).run([ToolCall("add", {"a": 1, "b": 1})] * 3)
    assert [o.status for o in out] == [Status.OK, Status.OK, Status.BAD_CALL]


def test_a_tool_that_hangs_times_out_and_does_not_block_the_caller():
    release = threading.Event()

    def hang(x: str) -> str:
        """Waits until released.

        Args:
            x: ignored
        """
        release.wait()
        return "late"

    try:
        (out,) = ToolBox([hang], timeout_s=0.2).run([ToolCall("hang", {"x": ""})])
        assert out.status is Status.TIMEOUT and "timed out after 0.2 s" in out.content
    finally:
        release.set()


def test_the_calls_of_a_turn_run_concurrently():
    """Two calls that each wait for the other: only concurrent execution lets both pass."""
    barrier = threading.Barrier(2, timeout=10)

    def meet(x: str) -> str:
        """Waits for the other call.

        Args:
            x: ignored
        """
        barrier.wait()
        return "met"

    out = ToolBox([meet], timeout_s=20).run([ToolCall("meet", {"x": "1"})] * 2)
    assert [o.content for o in out] == ["met", "met"]


def test_a_tool_result_longer_than_the_limit_is_cut():
    def long(n: int) -> str:
        """A long text.

        Args:
            n: its length
        """
        return "x" * n

    (out,) = ToolBox([long], max_result_chars=10).run([ToolCall("long", {"n": 100})])
    assert out.content == "x" * 10 + "...(truncated)"


# ------------------------------------------------------------------------------ environments


def exact(messages, row) -> float:
    return float(messages[-1]["content"].strip() == row["answer"])


def test_the_tool_environment_runs_calls_then_scores_the_answer():
    env = tool_env_factory([add], reward=exact)(EpisodeLimits())
    first = env.reset({"prompt": "2+3=", "answer": "5"})
    assert first == [{"role": "user", "content": "2+3="}]
    call = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
    step = env.step({"role": "assistant", "content": call})
    assert not step.done and step.reward is None
    assert step.observation == ({"role": "tool", "name": "add", "content": "5"},)
    final = env.step({"role": "assistant", "content": "5"})
    assert final == StepResult(reward=1.0, done=True)


def test_the_limits_reach_the_tools():
    env = tool_env_factory([add])(EpisodeLimits(tool_timeout_s=3.5, max_calls_per_turn=2))
    assert isinstance(env, ToolEnvironment)
    assert env.toolbox.timeout_s == 3.5 and env.toolbox.max_calls == 2


# --------------------------------------------------------------------------- loading errors


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module ``userenv`` in the working directory, as a user would write it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "userenv.py").write_text(
        "from placerl.rollout.envs import tool_env_factory\n"
        "def add(a: int, b: int) -> str:\n"
        '    """Add.\n\n    Args:\n        a: first\n        b: second\n    """\n'
        "    return str(a + b)\n"
        "make = tool_env_factory([add])\n"
        "def broken(limits):\n    raise RuntimeError('no database')\n"
        "def not_env(limits):\n    return 3\n"
        "def bare(x):\n    return x\n"
    )
    yield "userenv"
    sys.modules.pop("userenv", None)


def test_a_factory_and_tools_load_from_the_working_directory(user_module):
    env = start_environment(load_env_factory("userenv:make"), EpisodeLimits(), "env.factory")
    assert [s["function"]["name"] for s in env.tool_schemas] == ["add"]
    assert [t.name for t in load_tools(["userenv:add"])] == ["add"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("userenv", "expected 'module:attribute'"),
        ("nomodule:make", "cannot import 'nomodule'"),
        ("userenv:missing", "has no callable 'missing'"),
        ("userenv:broken", "factory raised RuntimeError: no database"),
        ("userenv:not_env", "returned int, which is not an environment"),
    ],
)
def test_a_factory_that_cannot_start_is_one_user_error(user_module, spec, message):
    with pytest.raises(UserError, match=message) as err:
        start_environment(load_env_factory(spec), EpisodeLimits(), "env.factory")
    assert err.value.exit_code == 2 and err.value.where == "env.factory"


def test_a_tool_without_docstring_in_the_config_is_a_user_error(user_module):
    with pytest.raises(UserError, match="tool 'bare'") as err:
        load_tools(["userenv:bare"])
    assert err.value.where == "env.tools"


@pytest.mark.parametrize(
    "bad", [{"max_turns": 0}, {"max_tokens": 0}, {"tool_timeout_s": 0}, {"step_timeout_s": -1}]
)
def test_invalid_limits_name_the_key(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        EpisodeLimits(**bad)
