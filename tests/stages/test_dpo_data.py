"""Bad preference data is refused with the file and row, or cut with a printed count."""

from __future__ import annotations

import json
import logging

import pytest

from placerl.cli import main
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.stages.preference import OfflinePreferenceStage
from placerl.timing import PhaseTimer
from tests.conftest import fast_overrides

GOOD = {"prompt": "rev 123=", "chosen": "321", "rejected": "123"}


def _file(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _stage(model_dir, tmp_path, rows, *extra):
    path = _file(tmp_path, rows)
    overrides = [
        *fast_overrides(model_dir, tmp_path / "run", "dpo", 2),
        f"data.train={path}",
        "trainer.batch_size=2",
        *extra,
    ]
    return OfflinePreferenceStage(load_config(None, overrides, RunConfig))


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"chosen": "321", "rejected": "321"}, "identical"),
        ({"chosen": ""}, "'chosen' is an empty string"),
        ({"rejected": "   "}, "'rejected' is an empty string"),
        ({"prompt": "rev " + "1" * 80 + "="}, "too long for max_len=32"),
    ],
)
def test_bad_row_is_an_error_naming_file_and_row(tiny_model_dir, tmp_path, bad, message):
    with pytest.raises(UserError, match=message) as err:
        _stage(tiny_model_dir, tmp_path, [GOOD, GOOD | bad, GOOD], "data.max_len=32")
    assert "pairs.jsonl row 1" in err.value.where


def test_conversational_response_without_content_is_an_error(tiny_model_dir, tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "rev 12="}],
        "chosen": [{"role": "assistant", "content": "21"}],
        "rejected": [{"role": "assistant", "content": " "}],
    }
    with pytest.raises(UserError, match="'rejected' has no content") as err:
        _stage(tiny_model_dir, tmp_path, [row])
    assert "pairs.jsonl row 0" in err.value.where


def test_conversational_pairs_train(tiny_model_dir, tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "rev 12="}],
        "chosen": [{"role": "assistant", "content": "21"}],
        "rejected": [{"role": "assistant", "content": "12"}],
    }
    stage = _stage(tiny_model_dir, tmp_path, [row, row])
    prompt = stage.tokenizer.decode(stage.pairs[0].prompt, skip_special_tokens=True)
    assert prompt == "user: rev 12=\nassistant: "  # the chat template, generation prompt on
    metrics = stage.step(0, PhaseTimer())
    assert metrics["rewards/accuracy"] == 0.0 and metrics["data/truncated"] == 0


LONG = {"prompt": "rev 1=", "chosen": "1" * 30 + "2", "rejected": "1" * 30 + "3"}


def test_over_length_pair_is_an_error_when_asked(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="longer than data.max_len=16") as err:
        _stage(
            tiny_model_dir,
            tmp_path,
            [GOOD, LONG],
            "data.max_len=16",
            "preference.over_length=error",
        )
    assert "pairs.jsonl row 1" in err.value.where


def test_over_length_pair_that_differs_only_past_the_cut_is_an_error(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="same tokens within data.max_len=16") as err:
        _stage(tiny_model_dir, tmp_path, [GOOD, GOOD, LONG], "data.max_len=16")
    assert "pairs.jsonl row 2" in err.value.where


def test_over_length_pairs_are_cut_counted_and_logged(tiny_model_dir, tmp_path, caplog):
    long = {"prompt": "rev 1=", "chosen": "2" + "1" * 30, "rejected": "3" + "1" * 30}
    with caplog.at_level(logging.WARNING):
        stage = _stage(tiny_model_dir, tmp_path, [GOOD, long, long, GOOD], "data.max_len=16")
    assert "2 of 4 pairs are longer than data.max_len=16" in caplog.text
    assert "rows 1, 2" in caplog.text and "pairs.jsonl" in caplog.text
    assert [p.truncated for p in stage.pairs] == [False, True, True, False]
    cut = stage.pairs[1]
    assert len(cut.prompt) + len(cut.chosen) == 16 and len(cut.rejected) == len(cut.chosen)
    truncated = sum(stage.step(i, PhaseTimer())["data/truncated"] for i in range(2))
    assert truncated == 2  # one epoch of 4 pairs in two batches: both long pairs seen


def test_cli_reports_bad_data_in_one_line(tiny_model_dir, tmp_path, capsys):
    path = _file(tmp_path, [GOOD, GOOD | {"rejected": "321"}])
    config = tmp_path / "dpo.yaml"
    config.write_text("stage: dpo\n")
    code = main(
        [
            "train",
            str(config),
            f"model.path={tiny_model_dir}",
            f"run_dir={tmp_path / 'run'}",
            f"data.train={path}",
            "trainer.progress=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "pairs.jsonl row 1" in err and "identical" in err
    assert "Traceback" not in err


def test_held_out_pairs_from_a_file(tiny_model_dir, tmp_path):
    held_out = _file(tmp_path, [GOOD, GOOD | {"rejected": "322"}], name="held_out.jsonl")
    stage = _stage(tiny_model_dir, tmp_path, [GOOD, GOOD], f"data.eval={held_out}")
    metrics = stage.evaluate()
    assert len(stage.eval_pairs) == 2
    assert metrics["eval/loss"] == pytest.approx(0.6931, abs=1e-4)  # π = π_ref so far
    assert "eval/accuracy" not in metrics  # exact match needs the builtin task's answers
