"""The house rule on size (DESIGN.md rule 1, issue 20): no file in placerl/ over 400 lines, no
function over 60, and the controller loop (placerl/trainer.py) at most 150 lines. A module or
function that grows past its limit fails here, named with its size, so it is split by role or
phase while it is still small enough to split."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
MAX_FILE, MAX_FUNCTION, MAX_TRAINER = 400, 60, 150


def sources() -> list[Path]:
    return sorted(p for p in (ROOT / "placerl").rglob("*.py") if "__pycache__" not in p.parts)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def long_functions(path: Path, limit: int, root: Path = ROOT) -> list[str]:
    """``file::name (n)`` for each function or method of ``path`` longer than ``limit`` lines,
    counted from its ``def`` to its last line (decorators excluded, its docstring included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                found.append(f"{path.relative_to(root)}::{node.name} ({n})")
    return found


def test_the_walk_sees_the_package():
    assert len(sources()) > 100
    assert ROOT / "placerl" / "trainer.py" in sources()


def test_no_file_in_placerl_is_over_400_lines():
    big = [f"{p.relative_to(ROOT)} ({lines(p)})" for p in sources() if lines(p) > MAX_FILE]
    assert not big, f"files over {MAX_FILE} lines: {big}"


def test_no_function_in_placerl_is_over_60_lines():
    long = [f for p in sources() for f in long_functions(p, MAX_FUNCTION)]
    assert not long, f"functions over {MAX_FUNCTION} lines: {long}"


def test_the_controller_loop_is_at_most_150_lines():
    n = lines(ROOT / "placerl" / "trainer.py")
    assert n <= MAX_TRAINER, f"placerl/trainer.py is {n} lines (at most {MAX_TRAINER})"


def test_the_function_count_reads_def_to_last_line(tmp_path):
    """The measure itself: a 61-line function is caught, a 60-line one is not."""
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    (tmp_path / "f.py").write_text(f"def short():\n{body}\n\ndef long():\n{body}\n    y = 0\n")
    assert long_functions(tmp_path / "f.py", 60, tmp_path) == ["f.py::long (61)"]
