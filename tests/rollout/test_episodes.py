"""Specification of the episode runner: token-exact trajectories (the sampler's ids, then the
observation tokens tokenised alone), limits, failures as data, per-episode scheduling, the
batch layout, metrics and samples — with a scripted sampler (tests/rollout/scripted.py)."""

from __future__ import annotations

import json
import threading

import pytest

from placerl.errors import UserError
from placerl.models.loading import LoadOptions, load_tokenizer
from placerl.rollout.envs import EpisodeLimits, StepResult, tool_env_factory
from placerl.rollout.episodes.batch import episodes_to_batch
from placerl.rollout.episodes.bridge import ChatBridge
from placerl.rollout.episodes.metrics import episode_metrics, sample_record
from placerl.rollout.episodes.record import EndReason, Source
from placerl.rollout.episodes.runner import run_episodes
from placerl.tasks.tool_arithmetic import (
    TOOL_CHAT_TEMPLATE,
    ToolArithmeticTask,
    calc,
    call_text,
    final_answer_reward,
    make_env,
)
from placerl.types import Field
from tests.rollout.scripted import ScriptedTurns, calculator_oracle


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir, LoadOptions())
    tok.chat_template = TOOL_CHAT_TEMPLATE
    return tok


def scripted(tokenizer, policy=calculator_oracle):
    return ScriptedTurns(tokenizer, policy, tokenizer.eos_token_id)


def run(tokenizer, rows, factory=make_env, policy=calculator_oracle, max_new=128, **limits):
    sampler = scripted(tokenizer, policy)
    episodes = run_episodes(
        sampler, factory, rows, tokenizer, EpisodeLimits(**limits), max_new_tokens=max_new
    )
    return episodes, sampler


ROWS = ToolArithmeticTask().prompt_rows(6, seed=0)


# ------------------------------------------------------------------------- token-exact record


def test_the_oracle_solves_every_problem_with_one_call(tokenizer):
    episodes, _ = run(tokenizer, ROWS)
    for episode, row in zip(episodes, ROWS):
        assert episode.end is EndReason.DONE and episode.reward == 1.0
        assert [m["role"] for m in episode.messages] == ["user", "assistant", "tool", "assistant"]
        assert episode.messages[2]["content"] == row["answer"]


def test_the_response_is_the_sampled_ids_then_the_bridge_tokenised_alone(tokenizer):
    (episode,), sampler = run(tokenizer, ROWS[:1])
    expression = ROWS[0]["prompt"][:-1]
    eos = tokenizer.eos_token_id
    call = [*sampler.encode(call_text(expression)), eos]
    bridge = sampler.encode(f"\ntool: {calc(expression)}\nassistant: ")
    answer = [*sampler.encode(calc(expression)), eos]
    assert episode.response_ids == call + bridge + answer
    assert episode.sources == [Source.MODEL] * len(call) + [Source.OBSERVATION] * len(bridge) + [
        Source.MODEL
    ] * len(answer)
    prompt = ChatBridge(tokenizer).prompt_ids([{"role": "user", "content": ROWS[0]["prompt"]}])
    assert list(episode.prompt_ids) == prompt
    assert tokenizer.decode(episode.prompt_ids) == f"<s>user: {ROWS[0]['prompt']}\nassistant: "


def test_behaviour_log_probs_are_the_samplers_on_model_tokens_only(tokenizer):
    (episode,), _ = run(tokenizer, ROWS[:1])
    model_turns = [s for s in episode.segments if s.source is Source.MODEL]
    expected = []
    for segment in episode.segments:
        if segment.source is Source.MODEL:
            expected += [-0.1 * (k + 1) for k in range(len(segment.ids))]
        else:
            expected += [0.0] * len(segment.ids)
    assert episode.log_probs == pytest.approx(expected)
    assert len(model_turns) == 2


def test_the_batch_masks_observations_out_of_the_loss_but_not_out_of_attention(tokenizer):
    episodes, _ = run(tokenizer, ROWS[:3])
    batch = episodes_to_batch(episodes, tokenizer.pad_token_id)
    width = batch[Field.PROMPT_IDS].shape[1]
    for row, episode in enumerate(episodes):
        n = len(episode.response_ids)
        model = [int(s is Source.MODEL) for s in episode.sources]
        assert batch[Field.RESPONSE_IDS][row, :n].tolist() == episode.response_ids
        assert batch[Field.RESPONSE_MASK][row, :n].tolist() == model
        assert batch[Field.RESPONSE_MASK][row, n:].sum() == 0
        assert batch[Field.ATTENTION_MASK][row, width : width + n].tolist() == [1] * n
        assert batch[Field.ATTENTION_MASK][row, width + n :].sum() == 0
        lps = batch[Field.OLD_LOG_PROBS][row, :n].tolist()
        assert lps == pytest.approx(episode.log_probs)
        prompt = batch[Field.PROMPT_IDS][row][batch[Field.PROMPT_MASK][row].bool()]
        assert prompt.tolist() == list(episode.prompt_ids)


# ------------------------------------------------------------------------------------ limits


def always_call(text: str) -> str:
    return call_text("1+1")


def test_max_turns_ends_an_episode_that_keeps_calling(tokenizer):
    episodes, _ = run(tokenizer, ROWS[:2], policy=always_call, max_turns=3)
    for episode in episodes:
        assert episode.end is EndReason.MAX_TURNS and len(episode.turns) == 3
        assert episode.reward is None
        assert episode.segments[-1].source is Source.MODEL  # never ends on an observation


@pytest.mark.parametrize("budget", [30, 45, 60, 90, 150])
def test_the_token_budget_bounds_the_whole_response(tokenizer, budget):
    episodes, _ = run(tokenizer, ROWS[:2], policy=always_call, max_turns=10, max_tokens=budget)
    for episode in episodes:
        assert len(episode.response_ids) <= budget
        assert episode.end in (EndReason.MAX_TOKENS, EndReason.TRUNCATED)
        assert episode.segments[-1].source is Source.MODEL


def test_a_turn_cut_by_its_own_limit_ends_the_episode_as_truncated(tokenizer):
    (episode,), _ = run(tokenizer, ROWS[:1], max_new=5)
    assert episode.end is EndReason.TRUNCATED and len(episode.turns) == 1
    assert len(episode.response_ids) == 5


# ---------------------------------------------------------------------------- failures: data


def broken(expr: str) -> str:
    """Fails.

    Args:
        expr: ignored
    """
    raise ZeroDivisionError("no")


def failing_policy(text: str) -> str:
    """Turn 1 a malformed call, turn 2 an unknown tool, turn 3 a tool that raises, then 5."""
    turns = text.count("assistant: ") - 1
    return [
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"name": "search", "arguments": {}}</tool_call>',
        call_text("1+1").replace("calc", "broken"),
        "5",
    ][turns]


def test_tool_failures_are_observations_and_counted(tokenizer):
    factory = tool_env_factory([calc, broken], reward=final_answer_reward)
    row = {"prompt": "2+3=", "answer": "5"}
    (episode,), _ = run(tokenizer, [row], factory=factory, policy=failing_policy, max_turns=5)
    assert episode.end is EndReason.DONE and episode.reward == 1.0
    observations = [m["content"] for m in episode.messages if m["role"] == "tool"]
    assert observations[0].startswith("error: malformed tool call")
    assert observations[1].startswith("error: unknown tool 'search'")
    assert observations[2] == "error: broken raised ZeroDivisionError: no"
    metrics = episode_metrics([episode])
    assert metrics["env/bad_calls"] == 2 and metrics["env/tool_errors"] == 1
    assert metrics["env/timeouts"] == 0


class ScriptedEnv:
    """An environment whose step does what the test says."""

    tool_schemas = ()

    def __init__(self, step):
        self._step = step

    def reset(self, row):
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, assistant):
        return self._step(assistant)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (lambda a: 1 / 0, "step raised ZeroDivisionError"),
        (lambda a: ([], 1.0, True), "returned tuple, expected StepResult"),
    ],
)
def test_an_environment_that_fails_is_one_user_error(tokenizer, step, message):
    with pytest.raises(UserError, match=message):
        run(tokenizer, ROWS[:1], factory=lambda limits: ScriptedEnv(step))


def test_a_step_past_its_timeout_ends_its_episode_only(tokenizer):
    release = threading.Event()

    def step(assistant):
        if "hang" in assistant["content"]:
            release.wait()
        return StepResult(reward=1.0, done=True)

    def policy(text):
        return "hang" if "slow" in text else "fine"

    rows = [{"prompt": "slow"}, {"prompt": "quick"}]
    try:
        episodes, _ = run(
            tokenizer,
            rows,
            factory=lambda limits: ScriptedEnv(step),
            policy=policy,
            step_timeout_s=0.3,
        )
    finally:
        release.set()
    assert [e.end for e in episodes] == [EndReason.STEP_TIMEOUT, EndReason.DONE]
    assert episode_metrics(episodes)["env/timeouts"] == 1


# ----------------------------------------------------------------------------- scheduling


def test_a_slow_tool_delays_only_its_own_episode(tokenizer):
    """Episode 0's tool waits until episode 1 has finished three tool turns. A runner that
    waited for every episode's tools before sampling again would never get there (its step
    would time out); this one samples episode 1's turns meanwhile."""
    others_done = threading.Event()
    counts = {"fast": 0}

    def slow(expr: str) -> str:
        """Waits for the other episode.

        Args:
            expr: ignored
        """
        others_done.wait(timeout=30)
        return "slow done" if others_done.is_set() else "gave up"

    def fast(expr: str) -> str:
        """Counts its calls.

        Args:
            expr: ignored
        """
        counts["fast"] += 1
        if counts["fast"] == 3:
            others_done.set()
        return "ok"

    def policy(text):
        turns = text.count("assistant: ") - 1
        name = "slow" if "first" in text else "fast"
        return (
            call_text("x").replace("calc", name) if turns < (1 if name == "slow" else 3) else "end"
        )

    factory = tool_env_factory([slow, fast], reward=lambda m, r: 1.0)
    rows = [{"prompt": "first"}, {"prompt": "second"}]
    episodes, sampler = run(
        tokenizer, rows, factory=factory, policy=policy, max_turns=5, tool_timeout_s=60
    )
    assert [e.end for e in episodes] == [EndReason.DONE, EndReason.DONE]
    assert episodes[0].messages[2]["content"] == "slow done"
    assert len(episodes[1].turns) == 4 and len(episodes[0].turns) == 2
    assert sampler.batches[0] == 2 and 1 in sampler.batches[1:]


# ----------------------------------------------------------------------- metrics and samples


def test_metrics_count_turns_calls_tokens_and_rewards(tokenizer):
    episodes, _ = run(tokenizer, ROWS)
    metrics = episode_metrics(episodes)
    assert metrics["env/turns"] == 2.0
    assert metrics["env/tool_calls_per_turn"] == 0.5
    assert metrics["env/reward"] == 1.0 and metrics["env/rewarded"] == 1.0
    model = sum(e.tokens(Source.MODEL) for e in episodes) / len(episodes)
    assert metrics["env/tokens_model"] == pytest.approx(model)
    assert metrics["env/tokens_observation"] > 0
    assert metrics["env/tool_latency_s"] >= 0 and metrics["env/end/done"] == 1.0


def test_a_sample_record_holds_the_whole_conversation_as_json(tokenizer):
    episodes, _ = run(tokenizer, ROWS[:1])
    record = json.loads(json.dumps(sample_record(episodes[0])))
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"]
    (call,) = record["turns"][0]["tool_calls"]
    assert call["name"] == "calc" and call["status"] == "ok"
    assert call["content"] == ROWS[0]["answer"]
    assert record["reward"] == 1.0 and record["end"] == "done"
    assert record["tokens"]["model"] + record["tokens"]["observation"] == len(
        episodes[0].response_ids
    )
