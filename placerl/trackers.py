"""Experiment trackers behind ``trainer.report_to``: TensorBoard and Weights & Biases.

``metrics.jsonl`` stays the source of truth; a tracker is a view of the same numbers (scalars)
and of the held-out samples each evaluation shows (text). Both are imported lazily: loading
TensorBoard takes seconds, and W&B is an optional extra (``pip install placerl[wandb]``),
whose absence is an error only when ``report_to`` asks for it — said before any model loads.

Resume: ``drop_tensorboard_steps`` removes the events of the steps a resumed run logs again,
so TensorBoard shows each step once (as ``metrics.jsonl`` does).

W&B: the run's id is kept in ``run_dir/wandb_run_id`` so a resumed run continues the same W&B
run; ``WANDB_MODE=offline`` (no account, no network) writes under ``run_dir/wandb``.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from placerl.errors import UserError

TB_DIR = "tb"
WANDB_ID_FILE = "wandb_run_id"
KNOWN = ("tensorboard", "wandb")


def check_trackers(names: Sequence[str]) -> None:
    """Every tracker asked for exists and can be imported (a clear error otherwise)."""
    for name in names:
        if name not in KNOWN:
            raise UserError(
                f"unknown tracker {name!r}; expected one of {', '.join(KNOWN)}",
                where="trainer.report_to",
            )
    if "wandb" in names and importlib.util.find_spec("wandb") is None:
        raise UserError(
            "report_to includes wandb, but the wandb package is not installed: "
            "pip install 'placerl[wandb]' (or pip install wandb), or remove wandb from "
            "trainer.report_to",
            where="trainer.report_to",
        )


def drop_tensorboard_steps(run_dir: Path, keep_step_at_most: int) -> int:
    """Atomically drop every TensorBoard event with ``step > keep_step_at_most`` from the
    event files under ``run_dir/tb``; returns how many were dropped.

    A resumed run logs the steps after its checkpoint again, in a new event file: without
    this, TensorBoard (and any reader of the files) would hold two points for each of them.
    This is what ``metrics.jsonl`` gets too. Each changed file is rewritten aside and renamed
    over the old one; a record torn by a crash ends the file's kept events.
    """
    files = sorted((Path(run_dir) / TB_DIR).glob("**/events.out.tfevents.*"))
    if not files:
        return 0  # nothing to read: TensorBoard's import (seconds) is not paid
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in files:
        kept, gone = [], 0
        for record in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(record)
            if event.HasField("file_version") or event.step <= keep_step_at_most:
                kept.append(record)
            else:
                gone += 1
        if gone:
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as f:
                writer = RecordWriter(f)
                for record in kept:
                    writer.write(record)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dropped += gone
    return dropped


class TensorBoardTracker:
    """Scalars and sample tables under ``run_dir/tb``."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TB_DIR), flush_secs=10)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def samples(self, step: int, tag: str, rows: list[dict[str, Any]]) -> None:
        self.writer.add_text(tag, markdown_table(rows), global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run per run directory, resumed with the directory."""

    def __init__(self, run_dir: Path, project: str | None, name: str, config: dict | None):
        import wandb

        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(6)
        self.run = wandb.init(
            project=project or os.environ.get("WANDB_PROJECT") or "placerl",
            name=name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=config or {},
        )
        id_file.write_text(run_id + "\n")
        self._wandb = wandb

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def samples(self, step: int, tag: str, rows: list[dict[str, Any]]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        data = [[_cell(row.get(c)) for c in columns] for row in rows]
        self.run.log({tag: self._wandb.Table(columns=columns, data=data)}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_trackers(
    names: Sequence[str],
    run_dir: Path,
    *,
    name: str = "placerl",
    project: str | None = None,
    config: dict | None = None,
) -> list[TensorBoardTracker | WandbTracker]:
    check_trackers(names)
    trackers: list[TensorBoardTracker | WandbTracker] = []
    for tracker in dict.fromkeys(names):
        if tracker == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir))
        else:
            trackers.append(WandbTracker(run_dir, project, name, config))
    return trackers


def _cell(value: Any) -> Any:
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (what TensorBoard's text plugin renders), cells escaped."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
