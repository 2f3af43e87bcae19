"""plot_run: the expected PNGs from synthetic metrics, skipping absent keys, stage subdirs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from placerl.errors import UserError
from placerl.plotting import plot_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _ppo_metrics(steps: int = 12) -> list[dict]:
    records = []
    for step in range(1, steps + 1):
        record = {
            "step": step,
            "reward/mean": math.tanh(step / 4),
            "reward/std": 0.3 / step,
            "kl/mean": 0.01 * step,
            "kl_coef": 0.1 * 0.95**step,
            "loss/policy": 1.0 / step,
            "loss/value": 2.0 / step,
            "time/generate": 0.5,
            "time/update": 0.3,
            "time/step": 0.9,
        }
        if step % 4 == 0:
            record["eval/accuracy"] = step / (steps + 1)
        records.append(record)
    records[2]["kl/mean"] = None  # a NaN logged as null must not break the plot
    return records


def _spans(steps: int = 3) -> list[dict]:
    spans = []
    for step in range(steps):
        t = 1_700_000_000.0 + 2.0 * step
        spans += [
            {"worker": "controller", "phase": "generate", "start": t, "end": t + 1.0, "step": step},
            {
                "worker": "actor-0",
                "phase": "update",
                "start": t + 1.0,
                "end": t + 1.8,
                "step": step,
            },
            {
                "worker": "actor-1",
                "phase": "update",
                "start": t + 1.0,
                "end": t + 1.7,
                "step": step,
            },
        ]
    return spans


def _names(paths: list[Path]) -> set[str]:
    return {p.name for p in paths}


def test_all_plots_from_full_metrics(tmp_path):
    _write_jsonl(tmp_path / "metrics.jsonl", _ppo_metrics())
    _write_jsonl(tmp_path / "timeline.jsonl", _spans())
    paths = plot_run(tmp_path)
    assert _names(paths) == {
        "reward.png",
        "kl.png",
        "losses.png",
        "phase_times.png",
        "accuracy.png",
        "timeline.png",
    }
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_absent_keys_skip_their_plots(tmp_path):
    _write_jsonl(tmp_path / "metrics.jsonl", [{"step": s, "loss/sft": 1.0 / s} for s in (1, 2, 3)])
    out = tmp_path / "elsewhere"
    paths = plot_run(tmp_path, out_dir=out)
    assert paths == [out / "losses.png"]
    assert not (tmp_path / "plots").exists()


def test_empty_metrics_give_no_plots(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert plot_run(tmp_path) == []


def test_missing_run_dir_is_a_user_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="nope"):
        plot_run(missing)


def test_run_dir_without_metrics_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="metrics.jsonl"):
        plot_run(tmp_path)


def test_stage_subdirectories_are_plotted_separately(tmp_path):
    _write_jsonl(tmp_path / "sft" / "metrics.jsonl", [{"step": 1, "loss/sft": 2.0}])
    _write_jsonl(tmp_path / "ppo" / "metrics.jsonl", [{"step": 1, "reward/mean": 0.5}])
    (tmp_path / "notes").mkdir()  # a subdirectory without metrics is ignored
    paths = plot_run(tmp_path)
    assert {p for p in paths if p.parent.parent.name == "sft"} == {
        tmp_path / "sft" / "plots" / "losses.png"
    }
    assert tmp_path / "ppo" / "plots" / "reward.png" in paths
    assert all(p.exists() for p in paths)
    out = tmp_path / "out"
    assert out / "sft" / "losses.png" in plot_run(tmp_path, out_dir=out)
