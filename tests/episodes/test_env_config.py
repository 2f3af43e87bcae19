"""The ``env:`` section: what it accepts, and one clear message (exit 2, no traceback) for
each way it can be wrong — before any model loads where the config alone shows it."""

from __future__ import annotations

import pytest

from placerl.cli import main
from placerl.config.env import EnvConfig
from tests.conftest import fast_overrides

ECHO = "env.factory=tests.episodes.envs:echo_env"


def train(capsys, tiny_model_dir, tmp_path, stage, *extra) -> tuple[int, str]:
    config = tmp_path / "empty.yaml"
    config.write_text("# everything comes from overrides\n")
    args = [*fast_overrides(tiny_model_dir, tmp_path / "run", stage, 1), "data.num_eval=0"]
    code = main(["train", str(config), *args, "env.max_tokens=24", *extra])
    return code, capsys.readouterr().err


def test_no_env_means_single_turn_sampling():
    assert not EnvConfig().enabled
    assert EnvConfig(tools=["m:f"]).enabled and EnvConfig(factory="m:f").enabled


@pytest.mark.parametrize(
    ("fields", "source"),
    [
        ({"factory": "m:f"}, "env"),
        ({"tools": ["m:f"]}, "function"),
        ({"factory": "m:f", "reward": "function"}, "function"),
    ],
)
def test_the_reward_source_defaults_to_what_the_env_gives(fields, source):
    assert EnvConfig(**fields).reward_source(None) == source


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            (ECHO, "env.tools=[tests.episodes.envs:word_count]"),
            "env.factory or env.tools, not both",
        ),
        (("env.tools=[tests.episodes.envs:word_count]", "env.reward=env"), "env.reward: env"),
        ((ECHO, "env.reward=model"), "reward.model"),
        ((ECHO, "reward.function=tests.conftest:length_reward"), "env.reward: env"),
        ((ECHO, "env.max_turns=0"), "env.max_turns"),
        ((ECHO, "env.tool_timeout_s=-1"), "env.tool_timeout_s"),
        (("env.factory=tests.episodes.envs:nothing_here",), "nothing_here"),
        (("env.factory=no_such_module_24:make",), "no_such_module_24"),
        (("env.factory=tests.episodes.envs:failing_factory",), "no sandbox available"),
        (("env.tools=[tests.episodes.envs:not_a_tool]",), "not_a_tool"),
        ((ECHO, "env.max_tokens=4000"), "env.max_tokens"),
    ],
)
def test_a_wrong_env_section_is_one_clear_error(capsys, tiny_model_dir, tmp_path, extra, words):
    code, err = train(capsys, tiny_model_dir, tmp_path, "grpo", *extra)
    assert code == 2, err
    assert words in err and "Traceback" not in err


@pytest.mark.slow
def test_an_environment_step_that_raises_is_one_clear_error(capsys, tiny_model_dir, tmp_path):
    factory = "env.factory=tests.episodes.envs:raising_step_env"
    code, err = train(capsys, tiny_model_dir, tmp_path, "grpo", factory)
    assert code == 2 and "the grader crashed" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_reward_over_conversations_that_raises_is_one_clear_error(
    capsys, tiny_model_dir, tmp_path
):
    extra = (ECHO, "env.reward=function", "reward.function=tests.episodes.envs:failing_reward")
    code, err = train(capsys, tiny_model_dir, tmp_path, "grpo", *extra)
    assert code == 2 and "bad reward" in err and "Traceback" not in err
