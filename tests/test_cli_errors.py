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
    assert code == 2 and "row 0" in err and "max_prompt_len=16" in err


@pytest.mark.parametrize(
    "body,expected",
    [
        ("raise ValueError('boom')", "raised ValueError: boom"),
        ("return [1.0]", "returned 1 scores"),
        ("return 'oops'", "list of floats"),
        ("return [float('nan')] * len(completions)", "finite"),
        ("raise SystemExit(7)", "raised SystemExit(7)"),
        ("raise KeyboardInterrupt", "raised KeyboardInterrupt"),
        ("return [1e38] * len(completions)", "is 1e+38: beyond"),  # inf once squared in f32
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


# --- models, run directories, context length, stage of a resumed run ------------------------


def snapshot(root) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: what a failed command must leave unchanged."""
    if not root.exists():
        return {}
    if root.is_file():
        return {str(root): root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def truncated_copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return dst


@pytest.fixture(scope="module")
def tiny_reward_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model saved as a one-label reward model (what ``stage: rm`` exports)."""
    from placerl.models.loading import load_reward_model, load_tokenizer

    path = tmp_path_factory.mktemp("rm") / "reward_model"
    tok = load_tokenizer(tiny_model_dir)
    load_reward_model(tiny_model_dir, tok.pad_token_id).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "stage,key", [("sft", "model.path"), ("ppo", "reward.model"), ("dpo", "reference")]
)
def test_truncated_weights_are_named(capsys, tmp_path, tiny_model_dir, tiny_reward_dir, stage, key):
    source = {"model.path": tiny_model_dir, "reward.model": tiny_reward_dir}.get(
        key, tiny_model_dir
    )
    broken = truncated_copy(source, tmp_path / "broken")
    run_dir = tmp_path / "r"
    args = _train_args(tiny_model_dir, run_dir, stage, f"{key}={broken}")
    code, err = run_cli(capsys, *args)
    assert code == 2 and "Traceback" not in err, err
    assert f"{broken / 'model.safetensors'}: " in err and "truncated" in err
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "checkpoints").exists()


def test_run_dir_that_is_a_file(capsys, tmp_path, tiny_model_dir):
    run_file = write(tmp_path / "notes.txt", "my notes\n")
    for run_dir in (run_file, run_file / "sub"):
        args = [*_train_args(tiny_model_dir, tmp_path / "x", "sft"), f"run_dir={run_dir}"]
        code, err = run_cli(capsys, *args)
        assert code == 2 and "is an existing file" in err and "Traceback" not in err
    assert run_file.read_text() == "my notes\n"


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_range(capsys, tmp_path, tiny_model_dir, seed):
    code, err = run_cli(capsys, *_train_args(tiny_model_dir, tmp_path / "r", "sft", f"seed={seed}"))
    assert code == 2 and "seed" in err and "Traceback" not in err


def test_generation_beyond_the_models_context(capsys, tmp_path, tiny_model_dir):
    run_dir = tmp_path / "r"
    args = _train_args(tiny_model_dir, run_dir, "grpo", "rollout.max_new_tokens=60")
    code, err = run_cli(capsys, *args)
    assert code == 2 and "Traceback" not in err
    assert "rollout.max_new_tokens=60" in err and "max_position_embeddings=64" in err
    assert "row " in err and not (run_dir / "config.yaml").exists()


def test_resuming_a_run_of_another_stage(capsys, tmp_path, tiny_model_dir):
    run_dir = tmp_path / "r"
    assert run_cli(capsys, *_train_args(tiny_model_dir, run_dir, "sft", "trainer.steps=1"))[0] == 0
    before = snapshot(run_dir)
    code, err = run_cli(capsys, *_train_args(tiny_model_dir, run_dir, "grpo"), "--resume")
    assert code == 2 and "Traceback" not in err
    assert "'sft' run" in err and "stage 'grpo'" in err
    assert snapshot(run_dir) == before


def test_over_length_sft_examples_are_counted_or_refused(capsys, caplog, tmp_path, tiny_model_dir):
    import logging

    rows = [{"prompt": "rev 12=", "completion": "21" * (1 + 20 * (i % 2))} for i in range(4)]
    data = write(tmp_path / "long.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    args = _train_args(
        tiny_model_dir, tmp_path / "r", "sft", f"data.train={data}", "data.max_len=16"
    )
    with caplog.at_level(logging.WARNING):
        assert run_cli(capsys, *args, "trainer.steps=1")[0] == 0
    assert "2 of 4 examples are longer than data.max_len=16" in caplog.text
    assert "rows 1, 3" in caplog.text and "long.jsonl" in caplog.text
    code, err = run_cli(capsys, *args, f"run_dir={tmp_path / 'r2'}", "data.over_length=error")
    assert code == 2 and "long.jsonl row 1" in err and "data.max_len=16" in err


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--hidden", "-3"], "--hidden -3"),
        (["--hidden", "30"], "multiple of 8"),
        (["--layers", "0"], "--layers 0"),
        (["--seed", "-1"], "--seed -1"),
    ],
)
def test_make_model_arguments(capsys, tmp_path, extra, expected):
    code, err = run_cli(capsys, "make-model", str(tmp_path / "m"), *extra)
    assert code == 2 and expected in err and "Traceback" not in err


def test_make_model_over_a_file(capsys, tmp_path):
    target = write(tmp_path / "m", "keep\n")
    code, err = run_cli(capsys, "make-model", str(target))
    assert code == 2 and "existing file" in err and target.read_text() == "keep\n"
