"""MetricsLogger: JSONL as source of truth, resume truncation, TensorBoard, spans, progress."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from placerl.errors import UserError
from placerl.logging import MetricsLogger, read_metrics


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _logger(run_dir: Path, **kwargs) -> MetricsLogger:
    kwargs.setdefault("total_steps", 10)
    kwargs.setdefault("enable_progress", False)
    kwargs.setdefault("report_to", ())
    return MetricsLogger(run_dir, **kwargs)


def test_log_writes_one_json_object_per_step(tmp_path):
    with _logger(tmp_path) as logger:
        logger.log(1, {"reward/mean": 0.5, "loss/policy": 1.0 / 3.0, "count": 4})
        logger.log(2, {"reward/mean": 0.75})
    records = _lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["reward/mean"] == 0.5
    assert records[0]["loss/policy"] == pytest.approx(1.0 / 3.0, rel=1e-6)
    assert records[0]["count"] == 4 and isinstance(records[0]["count"], int)
    assert read_metrics(tmp_path) == records


def test_lines_are_flushed_before_close(tmp_path):
    logger = _logger(tmp_path)
    logger.log(1, {"x": 1.0})
    assert _lines(tmp_path / "metrics.jsonl") == [{"step": 1, "x": 1.0}]
    logger.close()


def test_non_finite_values_become_null(tmp_path):
    with _logger(tmp_path) as logger:
        logger.log(1, {"a": math.nan, "b": math.inf, "c": 2.0})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert _lines(tmp_path / "metrics.jsonl") == [{"step": 1, "a": None, "b": None, "c": 2.0}]


def test_accepts_tensor_and_numpy_scalars(tmp_path):
    import numpy as np
    import torch

    with _logger(tmp_path) as logger:
        logger.log(1, {"t": torch.tensor(0.25), "n": np.float32(0.5), "i": np.int64(3)})
    assert _lines(tmp_path / "metrics.jsonl") == [{"step": 1, "t": 0.25, "n": 0.5, "i": 3}]


def test_resume_drops_steps_after_the_checkpoint(tmp_path):
    with _logger(tmp_path) as logger:
        for step in range(1, 6):
            logger.log(step, {"x": float(step)})
            logger.log_spans([("controller", "generate", step, step + 0.5)], step=step)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "x": ')  # torn by a crash mid-write
    with _logger(tmp_path, start_step=3) as logger:
        logger.log(4, {"x": 40.0})
    records = _lines(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["x"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    assert [s["step"] for s in _lines(tmp_path / "timeline.jsonl")] == [1, 2, 3]
    assert not list(tmp_path.glob(".*.tmp")), "temp files of the atomic rewrite must not remain"


def test_tensorboard_event_file_skips_non_finite(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with _logger(tmp_path, report_to=["tensorboard"]) as logger:
        logger.log(1, {"reward/mean": 0.5, "kl/mean": math.nan})
        logger.log(2, {"reward/mean": 0.7, "kl/mean": 0.1})
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("reward/mean")] == [1, 2]
    assert [e.step for e in acc.Scalars("kl/mean")] == [2]


def test_log_spans_writes_one_object_per_span(tmp_path):
    with _logger(tmp_path) as logger:
        assert not (tmp_path / "timeline.jsonl").exists()
        logger.log_spans([("controller", "generate", 1.0, 2.0), ("actor-0", "update", 2.0, 3.5)], 7)
    assert _lines(tmp_path / "timeline.jsonl") == [
        {"worker": "controller", "phase": "generate", "start": 1.0, "end": 2.0, "step": 7},
        {"worker": "actor-0", "phase": "update", "start": 2.0, "end": 3.5, "step": 7},
    ]


def test_progress_bar_and_print_go_to_the_console(tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with _logger(tmp_path, enable_progress=True, console=console, description="ppo") as logger:
        logger.log(1, {"reward/mean": 0.123456, "kl/mean": 0.0012345})
        logger.print("stage sft done")
    text = out.getvalue()
    assert "stage sft done" in text
    assert "ppo" in text and "1/10" in text
    assert "reward 0.123" in text and "kl 0.00123" in text


def test_read_metrics_names_the_missing_file(tmp_path):
    with pytest.raises(UserError, match="metrics.jsonl"):
        read_metrics(tmp_path)


def test_read_metrics_rejects_a_corrupt_middle_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2"):
        read_metrics(tmp_path)
