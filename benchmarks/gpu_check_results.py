"""The GPU check's figures: one JSON line each in ``gpu_check.jsonl``, and the one table.

Each part of the check runs in its own time-boxed process (``gpu_check.sh``) and appends its
figures as it measures them, so a part stopped at its time limit keeps what it had; the shell
appends one status line per part. The table is read back from that file at the end. No torch
here: the table prints even where torch does not import.
"""

from __future__ import annotations

import json
from pathlib import Path

PARTS = ("setup", "model", "stages", "steps", "generation", "memory", "ray", "profile", "plan")
STATUS = "(part)"  # the figure name of a part's status line


class Results:
    """Appends figures to ``path`` (JSON lines) and prints each as it comes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, part: str, figure: str, value: str, note: str = "", number=None) -> None:
        row = {"part": part, "figure": figure, "value": value, "note": note}
        if number is not None:
            row["number"] = number
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a part's time limit
                continue
        return out

    def number(self, part: str, figure: str) -> float | None:
        """The last number recorded for ``part``/``figure``."""
        found = [r["number"] for r in self.rows() if (r["part"], r["figure"]) == (part, figure)]
        return found[-1] if found and found[-1] is not None else None


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> str:
    """One markdown table, parts in the check's order, each part's status first."""
    order = {p: i for i, p in enumerate(PARTS)}
    ranked = sorted(
        enumerate(rows),
        key=lambda ir: (
            order.get(ir[1]["part"], len(PARTS)),
            not ir[1]["figure"].startswith(STATUS[:-1]),  # "(part)", "(part --plan-after-...)"
            ir[0],
        ),
    )
    lines = ["| part | figure | value | note |", "|---|---|---|---|"]
    for _, r in ranked:
        cells = (r["part"], r["figure"], r["value"], r.get("note", ""))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def write_table(results: Results, out: Path) -> str:
    """The table, printed and written to ``out`` (``gpu_check.md``)."""
    text = table(results.rows())
    Path(out).write_text(text + "\n")
    print(f"\n## the figures ({out})\n\n{text}")
    return text
