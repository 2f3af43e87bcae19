"""Loading local dataset files: every supported format reads, every user mistake is named."""

from __future__ import annotations

import json

import datasets
import pytest

from placerl.data.formats import load_preference_dataset, load_sft_dataset
from placerl.data.loading import load_records
from placerl.errors import UserError

ROWS = [
    {"prompt": "1+1=", "answer": "2"},
    {"prompt": "2+2=", "answer": "4"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load_error(path, required=("prompt",), kind="prompt dataset") -> UserError:
    with pytest.raises(UserError) as info:
        load_records(path, required, kind)
    return info.value


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_every_format_reads_the_same_records(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, ROWS)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS, indent=2))
    elif suffix == ".parquet":
        datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    else:
        path.write_text("prompt,answer\n1+1=,2\n2+2=,4\n")
    dataset = load_records(path, ["prompt"], "prompt dataset")
    assert isinstance(dataset, datasets.Dataset)
    assert [dict(r) for r in dataset] == ROWS


def test_blank_lines_in_jsonl_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    assert len(load_records(path, ["prompt"], "prompt dataset")) == 2


def test_conversational_columns_survive_loading(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    ]
    dataset = load_sft_dataset(write_jsonl(tmp_path / "sft.jsonl", rows))
    assert dataset[0]["messages"][1] == {"role": "assistant", "content": "yo"}


def test_malformed_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c",}\n{"prompt": "d"}\n')
    err = load_error(path)
    assert err.where == f"{path}:3"
    assert "line 3 is not valid JSON" in err.message and "prompt dataset" in err.message


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a"}\n["prompt", "b"]\n')
    err = load_error(path)
    assert err.where.endswith(":2") and "array" in err.message and "object" in err.message


def test_json_array_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"prompt": "a"},\n  {"prompt": }\n]\n')
    assert load_error(path).where == f"{path}:3"


def test_missing_column_is_named_with_the_present_ones(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejectd": "c"}])
    with pytest.raises(UserError) as info:
        load_preference_dataset(path)
    message = info.value.message
    assert "preference dataset is missing column 'rejected'" in message
    assert "columns present: prompt, chosen, rejectd" in message
    assert info.value.where == str(path)


def test_sft_dataset_needs_one_of_its_column_sets(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(UserError) as info:
        load_sft_dataset(path)
    assert "'prompt'+'completion' or 'messages'" in info.value.message
    assert "columns present: prompt, answer" in info.value.message


def test_missing_file_and_directory(tmp_path):
    assert "not found" in load_error(tmp_path / "nope.jsonl").message
    assert "not a file" in load_error(tmp_path).message


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    err = load_error(path)
    assert "'.txt'" in err.message
    assert ".csv, .json, .jsonl, .parquet" in err.message


@pytest.mark.parametrize(
    "name, text", [("e.jsonl", ""), ("e.jsonl", "\n\n"), ("e.csv", ""), ("e.csv", "prompt\n")]
)
def test_empty_files_are_rejected(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert "has no rows" in load_error(path).message


def test_empty_parquet_is_rejected(tmp_path):
    path = tmp_path / "e.parquet"
    datasets.Dataset.from_dict({"prompt": []}).to_parquet(str(path))
    assert "has no rows" in load_error(path).message


def test_corrupt_parquet_is_a_user_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    assert "not valid Parquet" in load_error(path).message


def test_csv_cells_stay_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,answer\n"a, b",007\nc,\n')
    dataset = load_records(path, ["prompt"], "prompt dataset")
    assert dataset[0] == {"prompt": "a, b", "answer": "007"}
    assert dataset[1]["answer"] == ""
