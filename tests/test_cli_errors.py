"""Bad input gets one clear message and exit code 2 — never a traceback — and destroys nothing."""

from __future__ import annotations

import json

import pytest

from placerl.cli import main
from tests.conftest import fast_overrides


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def write(path, text):
    path.write_text(text)
    return path


def test_missing_config_file(capsys, tmp_path):
    code, err = run_cli(capsys, "train", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in err and "Traceback" not in err


def test_yaml_syntax_error_names_the_line(capsys, tmp_path):
    cfg = write(tmp_path / "bad.yaml", "stage: sft\ntrainer:\n  steps: [1, 2\n")
    code, err = run_cli(capsys, "train", str(cfg))
    assert code == 2 and "bad.yaml:" in err


def test_unknown_key_suggests_the_closest(capsys, tmp_path):
    cfg = write(tmp_path / "c.yaml", "stage: sft\noptim:\n  learning_rat: 0.1\n")
    code, err = run_cli(capsys, "train", str(cfg))
    assert code == 2 and "learning_rat" in err and "c.yaml:3" in err


def test_wrong_range_names_key_and_value(capsys, tmp_path):
    cfg = write(tmp_path / "c.yaml", "stage: sft\n")
    code, err = run_cli(capsys, "train", str(cfg), "trainer.steps=-3")
    assert code == 2 and "trainer.steps" in err and "-3" in err


def test_missing_model_path(capsys, tmp_path):
    cfg = write(
        tmp_path / "c.yaml",
        f"stage: sft\nrun_dir: {tmp_path / 'run'}\nmodel: {{path: {tmp_path / 'missing'}}}\n",
    )
    code, err = run_cli(capsys, "train", str(cfg))
    assert code == 2 and "missing" in err and "does not exist" in err


def _train_args(model_dir, run_dir, stage, *extra):
    config = run_dir.parent / "empty.yaml"
    config.write_text("# everything comes from overrides\n")
    return ["train", str(config), *fast_overrides(model_dir, run_dir, stage), *extra]


def test_malformed_jsonl_line_is_named(capsys, tmp_path, tiny_model_dir):
    data = write(tmp_path / "d.jsonl", '{"prompt": "1+2=", "completion": "3"}\n{"prompt": \n')
    code, err = run_cli(
        capsys, *_train_args(tiny_model_dir, tmp_path / "r", "sft", f"data.train={data}")
    )
    assert code == 2 and "d.jsonl:2" in err


def test_missing_column_lists_present_ones(capsys, tmp_path, tiny_model_dir):
    data = write(tmp_path / "d.jsonl", '{"question": "1+2="}\n')
    code, err = run_cli(
        capsys, *_train_args(tiny_model_dir, tmp_path / "r", "grpo", f"data.train={data}")
    )
    assert code == 2 and "prompt" in err and "question" in err


def test_prompt_longer_than_the_limit(capsys, tmp_path, tiny_model_dir):
    data = write(
        tmp_path / "d.jsonl", json.dumps({"prompt": "1+" * 50 + "=", "answer": "0"}) + "\n"
    )
    code, err = run_cli(
        capsys,
        *_train_args(
            tiny_model_dir, tmp_path / "r", "grpo", f"data.train={data}", "data.max_prompt_len=16"
        ),
    )
    assert code == 2 and "row 0" in err and "max_len=16" in err


@pytest.mark.parametrize(
    "body,expected",
    [
        ("raise ValueError('boom')", "raised ValueError: boom"),
        ("return [1.0]", "returned 1 scores"),
        ("return 'oops'", "list of floats"),
        ("return [float('nan')] * len(completions)", "finite"),
    ],
)
def test_bad_reward_function_is_reported_and_keeps_earlier_work(
    capsys, tmp_path, tiny_model_dir, monkeypatch, body, expected
):
    name = f"user_rewards_{tmp_path.name}"  # a fresh module per case: imports are cached
    (tmp_path / f"{name}.py").write_text(f"def reward(completions, prompts, **kw):\n    {body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = tmp_path / "r"
    args = _train_args(tiny_model_dir, run_dir, "grpo")
    assert run_cli(capsys, *args)[0] == 0  # a good first run leaves checkpoints and metrics
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    code, err = run_cli(
        capsys,
        *args,
        "trainer.steps=5",
        f"reward.function={name}:reward",
        "--resume",
        "--allow-config-change",  # a new reward changes the training: allowed explicitly
    )
    assert code == 2 and expected in err and "Traceback" not in err
    assert (run_dir / "checkpoints" / "step_000003").is_dir()
    assert (run_dir / "metrics.jsonl").read_text().startswith(metrics_before.split("\n")[0])


def test_reward_function_that_cannot_be_imported(capsys, tmp_path, tiny_model_dir):
    code, err = run_cli(
        capsys,
        *_train_args(tiny_model_dir, tmp_path / "r", "grpo", "reward.function=no_such_mod:fn"),
    )
    assert code == 2 and "no_such_mod" in err
