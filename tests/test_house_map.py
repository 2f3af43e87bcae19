"""placerl/README.md lists every package of placerl/: one that disappears, or appears without
being listed there (what it owns, in one line), fails this test."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = ROOT / "placerl" / "README.md"


def listed() -> set[str]:
    """The packages in the README's table: rows that start with a `placerl/...` cell."""
    rows = re.findall(r"^\| `(placerl/[\w/]*)` \|", README.read_text(), flags=re.MULTILINE)
    return {row.rstrip("/") for row in rows}


def packages() -> set[str]:
    return {
        str(init.parent.relative_to(ROOT))
        for init in (ROOT / "placerl").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_the_readme_lists_every_package_and_only_those():
    assert "placerl/runtime" in listed(), "the table is read"
    missing, gone = packages() - listed(), listed() - packages()
    assert not missing, f"packages not in placerl/README.md: {sorted(missing)}"
    assert not gone, f"placerl/README.md lists packages that do not exist: {sorted(gone)}"


def test_the_files_the_readme_points_to_exist():
    named = set(
        re.findall(
            r"`((?:algos|runtime|roles|stages|rollout|placement|config)/[\w/]+\.py)",
            README.read_text(),
        )
    )
    assert "runtime/pipeline.py" in named
    missing = [path for path in sorted(named) if not (ROOT / "placerl" / path).is_file()]
    assert not missing, f"placerl/README.md points to files that do not exist: {missing}"
