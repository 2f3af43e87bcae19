"""MetricsLogger: JSONL as source of truth, resume truncation, TensorBoard, spans, progress."""

from __future__ import annotations

import io
import json
import math
import time
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


def test_progress_bar_shows_each_loss_and_the_latest_evaluation(tmp_path):
    from placerl.evaluation import Evaluation

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with _logger(tmp_path, enable_progress=True, console=console, description="sft") as logger:

        def live() -> str:
            return logger._progress.tasks[0].fields["live"]  # noqa: SLF001

        logger.log(1, {"loss/sft": 2.5})
        assert live() == "loss 2.5"  # SFT's one loss
        logger.evaluation(1, Evaluation({"eval/loss": 2.25, "eval/accuracy": 0.125}))
        assert live() == "eval@1 acc=0.125 loss=2.25"  # shown as soon as it is computed
        logger.log(2, {"loss/policy": 0.5, "loss/value": 0.25, "reward/mean": 1.0})
        assert live() == "reward 1  loss policy=0.5 value=0.25  eval@1 acc=0.125 loss=2.25"
    assert "loss policy=0.5 value=0.25  eval@1 acc=0.125 loss=2.25" in out.getvalue()


def test_evaluation_is_printed_with_samples_and_written_to_jsonl_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from placerl.evaluation import Evaluation

    out = io.StringIO()
    console = Console(file=out, width=200)
    samples = [
        {"prompt": "rev 12=", "response": "21", "answer": "21", "reward": 1.0},
        {"prompt": "[b]x[/b]\n", "response": "y|z", "reward": 0.0},  # markup, newline, pipe
    ]
    with _logger(tmp_path, report_to=["tensorboard"], console=console) as logger:
        logger.evaluation(3, Evaluation({"eval/reward": 0.5}, samples))
        logger.evaluation(4, {"eval/reward": 0.75})  # a plain dict: numbers, no samples
    text = out.getvalue()
    assert "train eval @ step 3: reward 0.5" in text and "eval @ step 4: reward 0.75" in text
    assert "'rev 12=' → '21'  (answer '21', reward 1)" in text
    assert "'[b]x[/b]\\n' → 'y|z'" in text  # shown literally, on one line
    rows = _lines(tmp_path / "samples.jsonl")
    assert rows == [{"step": 3, **samples[0]}, {"step": 3, **samples[1]}]
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors("eval/samples/text_summary")
    table = event.tensor_proto.string_val[0].decode()
    assert event.step == 3 and "rev 12=" in table and "y\\|z" in table


def test_resume_drops_samples_after_the_checkpoint(tmp_path):
    from placerl.evaluation import Evaluation

    with _logger(tmp_path, console=Console(file=io.StringIO())) as logger:
        for step in (2, 4):
            logger.evaluation(step, Evaluation({}, [{"prompt": "p", "response": str(step)}]))
    with _logger(tmp_path, start_step=3, console=Console(file=io.StringIO())):
        pass
    assert [r["step"] for r in _lines(tmp_path / "samples.jsonl")] == [2]


def test_wandb_requested_but_missing_is_a_user_error(tmp_path, monkeypatch):
    import importlib.util

    from placerl.trackers import check_trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install 'placerl\[wandb\]'") as err:
        check_trackers(["tensorboard", "wandb"])
    assert err.value.where == "trainer.report_to"
    check_trackers(["tensorboard"])  # not asked for: no error


def test_wandb_offline_run_gets_scalars_and_samples(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from placerl.evaluation import Evaluation

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    console = Console(file=io.StringIO())
    run_config = {"stage": "sft", "optim": {"lr": 0.001}}
    with _logger(tmp_path, report_to=["wandb"], console=console, run_config=run_config) as log:
        log.log(1, {"loss/sft": 2.0, "nan": math.nan})
        log.evaluation(1, Evaluation({"eval/loss": 1.5}, [{"prompt": "p", "response": "r"}]))
        log.log(2, {"loss/sft": 1.0})
        run_id = (tmp_path / "wandb_run_id").read_text().strip()
        run_dir = Path(log._trackers[0].run.dir).parent  # noqa: SLF001
    (log_file,) = run_dir.glob("*.wandb")
    assert run_id in run_dir.name
    # the offline transaction log holds the logged history (protobuf; the names are plain);
    # W&B's service may still be writing it when finish() returns
    deadline = time.monotonic() + 20
    while b"eval/samples" not in log_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    data = log_file.read_bytes()
    assert b"loss/sft" in data and b"eval/samples" in data and b"optim" in data
    # a resumed run continues the same W&B run id
    with _logger(tmp_path, report_to=["wandb"], console=console, start_step=2) as log:
        assert log._trackers[0].run.id == run_id  # noqa: SLF001


def test_progress_bar_shows_the_k3_kl_when_logged(tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with _logger(tmp_path, enable_progress=True, console=console, description="grpo") as logger:
        logger.log(1, {"reward/mean": 0.5, "kl/mean": -0.0289, "kl/k3": 0.0123})
    text = out.getvalue()
    assert "kl 0.0123" in text and "-0.0289" not in text


def _tensorboard_points(tb_dir: Path) -> list[tuple[str, int]]:
    """(tag, step) of every summary value in every event file, read raw (as any reader)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    points = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            points += [(value.tag, event.step) for value in event.summary.value]
    return points


def test_a_resume_leaves_one_tensorboard_point_per_step(tmp_path):
    """Issue 21.8: steps after the checkpoint are logged again by the resumed run; the event
    files must then hold each step once (as metrics.jsonl does), scalars and samples alike."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with _logger(tmp_path, report_to=["tensorboard"]) as logger:
        for step in range(1, 6):
            logger.log(step, {"reward/mean": float(step)})
        logger._write_samples(4, [{"prompt": "p", "response": "old"}])
    time.sleep(0.01)  # a new event file name (its timestamp is in seconds, plus the pid)
    with _logger(tmp_path, report_to=["tensorboard"], start_step=3) as logger:
        for step in range(4, 7):
            logger.log(step, {"reward/mean": 10.0 * step})
        logger._write_samples(4, [{"prompt": "p", "response": "new"}])
    points = _tensorboard_points(tmp_path / "tb")
    assert len(points) == len(set(points)), "a step logged twice"
    scalars = sorted(step for tag, step in points if tag == "reward/mean")
    assert scalars == [1, 2, 3, 4, 5, 6]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)
    ]  # fmt: skip
    assert not list((tmp_path / "tb").glob(".*.tmp"))


def test_a_fresh_start_drops_every_earlier_tensorboard_point(tmp_path):
    from placerl.logging import drop_steps_after

    with _logger(tmp_path, report_to=["tensorboard"]) as logger:
        logger.log(0, {"eval/reward": 1.0})
        logger.log(1, {"reward/mean": 1.0})
    drop_steps_after(tmp_path, -1)
    assert _tensorboard_points(tmp_path / "tb") == []
    assert (tmp_path / "metrics.jsonl").read_text() == ""
