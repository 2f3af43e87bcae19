"""Online runs with ``env:``: the rollout runs multi-turn episodes, their reward trains
GRPO/PPO, and the run's metrics and samples describe them (turns, tool calls, tokens by
source, the environment's reward, whole conversations in samples.jsonl)."""

from __future__ import annotations

import json

import pytest

from placerl.cli import main
from tests.conftest import fast_overrides

# the tiny random model rarely samples its end token: common characters end its turns
STOPS = 'rollout.stop_strings=["E","e","i","a","o","-","s","t","n"]'
ECHO = "env.factory=tests.episodes.envs:echo_env"
EPISODES = (STOPS, "rollout.max_new_tokens=8", "env.max_tokens=40", "trainer.log_samples=2")


def train(tiny_model_dir, tmp_path, stage, *extra, steps=2):
    config = tmp_path / "empty.yaml"
    config.write_text("# everything comes from overrides\n")
    run_dir = tmp_path / "run"
    args = [*fast_overrides(tiny_model_dir, run_dir, stage, steps), *EPISODES, *extra]
    assert main(["train", str(config), *args]) == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return [r for r in rows if r["step"] > 0 and "env/turns" in r], samples


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_the_environments_reward_trains_the_policy(tiny_model_dir, tmp_path, stage):
    rows, samples = train(tiny_model_dir, tmp_path, stage, ECHO)
    assert len(rows) == 2
    for row in rows:
        assert row["env/turns"] > 1, "the echo environment answers every turn"
        assert row["env/tokens_observation"] > 0
        assert row["env/end/done"] > 0 and row["env/rewarded"] > 0
        # rewarded episodes score their last turn's length; the rest 0
        assert row["reward/mean"] == pytest.approx(row["env/reward"] * row["env/rewarded"])
        assert row["actor/grad_norm"] > 0
        assert row["response/length"] == pytest.approx(row["env/tokens_model"])
    conversation = samples[0]["conversation"]
    assert isinstance(conversation, dict), "samples.jsonl keeps the conversation as JSON"
    roles = [m["role"] for m in conversation["messages"]]
    assert roles[:3] == ["user", "assistant", "tool"]
    assert len(conversation["turns"]) == roles.count("assistant")


def test_a_reward_function_scores_whole_conversations(tiny_model_dir, tmp_path):
    reward = "reward.function=tests.episodes.envs:conversation_length"
    rows, _ = train(tiny_model_dir, tmp_path, "grpo", ECHO, "env.reward=function", reward)
    for row in rows:
        # every message after the prompt counts: more than the final answers alone
        assert row["reward/mean"] > row["env/tokens_model"] / row["env/turns"]


def test_tools_as_functions_run_as_episodes(tiny_model_dir, tmp_path):
    tools = "env.tools=[tests.episodes.envs:word_count]"
    rows, samples = train(tiny_model_dir, tmp_path, "grpo", tools, "reward.scale=1")
    for row in rows:
        assert row["env/turns"] >= 1 and "env/tool_calls_per_turn" in row
        assert row["env/rewarded"] == 0  # the tool environment gives no rewards: the function
    assert samples[0]["conversation"]["messages"][0]["role"] in ("system", "user")


def test_episodes_say_why_they_stopped(tiny_model_dir, tmp_path):
    """Issue 21.8: ``response/clipped_ratio`` (and the other stop shares) per step and
    ``stop`` per sample for multi-turn episodes, as for single responses."""
    rows, samples = train(tiny_model_dir, tmp_path, "grpo", ECHO, steps=1)
    for row in rows:
        shares = [row[f"response/{k}_ratio"] for k in ("clipped", "end_token", "stop_string")]
        assert sum(shares) == pytest.approx(1.0)
    assert {s["stop"] for s in samples} <= {"end_token", "stop_string", "length"}
