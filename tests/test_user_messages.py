"""Messages that point the right way (issue 21, point 7): each names what is wrong, where, and
the key or command that fixes it; exit 2, no traceback."""

from __future__ import annotations

import json

import pytest

from placerl.cli import main
from placerl.config import load_config
from placerl.config.aliases import OTHER_NAMES
from placerl.config.describe import iter_fields
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from tests.conftest import fast_overrides


def _train(capsys, tmp_path, model_dir, stage, *extra) -> str:
    config = tmp_path / "empty.yaml"
    config.write_text("# everything comes from overrides\n")
    argv = ["train", str(config), *fast_overrides(model_dir, tmp_path / "run", stage), *extra]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return " ".join(err.split())


def test_a_hub_id_is_not_a_local_directory_and_nothing_is_downloaded(capsys, tmp_path):
    err = _train(capsys, tmp_path, "Qwen/Qwen2-0.5B-Instruct", "sft")
    assert "no such local directory" in err and "downloads nothing" in err
    assert "hf download Qwen/Qwen2-0.5B-Instruct --local-dir" in err


@pytest.mark.parametrize("contents", [[], ["train.jsonl", "eval.jsonl"]])
def test_an_empty_or_data_directory_is_the_wrong_directory(capsys, tmp_path, contents):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text('{"prompt": "a"}\n')
    err = _train(capsys, tmp_path, folder, "sft")
    assert "not a model or tokenizer directory" in err and str(folder) in err
    assert "sentencepiece" not in err and "tiktoken" not in err
    assert ("it is empty" if not contents else "eval.jsonl, train.jsonl") in err


def test_a_long_prompt_names_data_max_prompt_len(capsys, tmp_path, tiny_model_dir):
    err = _train(capsys, tmp_path, tiny_model_dir, "grpo", "data.max_prompt_len=3")
    assert "too long for max_prompt_len=3" in err and "raise data.max_prompt_len" in err
    assert "raise max_len" not in err
    assert "64 of 64 prompts are over; tokens p50 " in err  # choose the limit from the data


def test_default_lengths_fit_chat_data():
    """TRL's defaults: a chat prompt of a few hundred tokens (a system turn, a question) and a
    prompt plus answer of a thousand fit without a setting (64 / 128 were the old ones)."""
    data = load_config(None, ["stage=sft"], RunConfig).data
    assert (data.max_prompt_len, data.max_len) == (512, 1024)


def test_a_reward_function_that_raises_shows_the_users_file_and_line(
    capsys, tmp_path, tiny_model_dir, monkeypatch
):
    name = f"rewards_{tmp_path.name}"
    source = "def helper(c):\n    return 1 / 0\n\n\ndef reward(completions, **_):\n"
    (tmp_path / f"{name}.py").write_text(source + "    return [helper(c) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    err = _train(capsys, tmp_path, tiny_model_dir, "grpo", f"reward.function={name}:reward")
    assert "raised ZeroDivisionError: division by zero" in err
    assert f"{tmp_path / name}.py:2 in helper: return 1 / 0" in err


def test_a_chat_role_typo_is_an_error_naming_the_row(capsys, tmp_path, tiny_model_dir):
    data = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "rev 12="}, {"role": "assistant", "content": "21"}]},
        {"messages": [{"role": "usr", "content": "rev 34="}, {"role": "assistant", "content": "43"}]},
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = _train(capsys, tmp_path, tiny_model_dir, "sft", f"data.train={data}")
    assert "row 1" in err and "role 'usr'" in err and "did you mean 'user'?" in err


@pytest.mark.parametrize("section", ["model.lora", "rollout.vllm", "placement.roles"])
def test_help_config_takes_every_section_the_listing_shows(section, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help-config", section])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and f"[{section}" in out and "optim.lr" not in out


@pytest.mark.parametrize(
    "key, stage, meant",
    [
        ("learning_rate", "grpo", "optim.lr"),
        ("num_generations", "grpo", "rollout.samples_per_prompt"),
        ("beta", "grpo", "grpo.kl_coef"),
        ("beta", "dpo", "preference.beta"),
        ("beta", "ppo", "ppo.kl_coef"),
        ("max_completion_length", "grpo", "rollout.max_new_tokens"),
        ("save_total_limit", "sft", "trainer.keep_checkpoints"),
        ("trainer.learning_rate", "sft", "optim.lr"),
        ("num_train_epochs", "sft", "trainer.steps"),
        ("max_prompt_length", "grpo", "data.max_prompt_len"),
        ("batch_size", "sft", "'trainer.batch_size'"),  # a placerl name in the wrong section
    ],
)
def test_other_libraries_names_say_which_placerl_key_is_meant(key, stage, meant):
    with pytest.raises(UserError) as err:
        load_config(None, [f"stage={stage}", f"{key}=1"], RunConfig)
    assert f"{key}: unknown key" in err.value.message and meant in err.value.message


def test_every_alias_names_keys_that_exist():
    keys = {doc.key for doc in iter_fields(RunConfig)}
    for name, target in OTHER_NAMES.items():
        for text in target.values() if isinstance(target, dict) else [target]:
            key = text.split()[0]
            assert key in keys or key == "nothing:", (name, key)
