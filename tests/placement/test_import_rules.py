"""The placement package's layering, read from the source (every import, function-local ones too).

- ``placerl/placement`` imports nothing from the layers above it (runtime, stages, trainer,
  roles, algos, profiling, the CLI);
- its sub-packages come in an order, ``plan`` < ``cost`` < ``search`` < ``auto`` < the root
  modules (``from_config``, ``command``), and a module imports only from its own sub-package
  or an earlier one;
- no module imports itself back through others (no import circle), in ``placement`` or in
  ``profiling``;
- ``placerl/profiling`` runs the runtime and the trainer (tiny real runs): only the CLI imports
  it (and hands its profiler to ``train`` and ``plan``);
- no file of either package is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "placerl"
ORDER = ("plan", "cost", "search", "auto", "")  # "": the package's root modules
ABOVE_PLACEMENT = (
    "placerl.runtime",
    "placerl.stages",
    "placerl.trainer",
    "placerl.roles",
    "placerl.algos",
    "placerl.profiling",
    "placerl.cli",
    "placerl.demo",
)
MAY_IMPORT_PROFILING = ("placerl.profiling", "placerl.cli", "placerl.commands")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The placerl modules ``path`` imports (``from a import b`` counts ``a.b`` when that is a
    module, else ``a``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("placerl"):
                continue
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            if subs:
                out |= subs
            if len(subs) < len(node.names):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("placerl")}
    return out


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def rank(name: str) -> int:
    """The sub-package's place in ``ORDER`` (a root module: last)."""
    parts = name.split(".")
    sub = parts[2] if len(parts) > 3 or (len(parts) == 3 and parts[2] in ORDER) else ""
    return ORDER.index(sub)


def cycles(package: str) -> list[list[str]]:
    """Every strongly connected set of more than one module of ``package`` (Tarjan)."""
    nodes = [n for n in GRAPH if in_package(n, package)]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(n: str) -> None:
        index[n] = low[n] = len(index)
        stack.append(n)
        for m in GRAPH[n]:
            if m not in GRAPH or not in_package(m, package) or m == n:
                continue
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in stack:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            group = []
            while True:
                m = stack.pop()
                group.append(m)
                if m == n:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for n in nodes:
        if n not in index:
            visit(n)
    return found


def test_placement_imports_nothing_above_it():
    bad = {
        name: sorted(i for i in GRAPH[name] if any(in_package(i, a) for a in ABOVE_PLACEMENT))
        for name in GRAPH
        if in_package(name, "placerl.placement")
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_sub_packages_import_only_earlier_ones():
    bad = []
    for name in GRAPH:
        if not in_package(name, "placerl.placement") or name == "placerl.placement":
            continue
        for dep in GRAPH[name]:
            inside = in_package(dep, "placerl.placement") and dep != "placerl.placement"
            if inside and rank(dep) > rank(name):
                bad.append(f"{name} -> {dep}")
    assert bad == []


@pytest.mark.parametrize("package", ["placerl.placement", "placerl.profiling"])
def test_no_import_circle(package):
    assert cycles(package) == []


def test_only_the_cli_imports_profiling():
    bad = [
        name
        for name, deps in GRAPH.items()
        if not any(in_package(name, p) for p in MAY_IMPORT_PROFILING)
        and any(in_package(d, "placerl.profiling") for d in deps)
    ]
    assert bad == []


@pytest.mark.parametrize("package", ["placement", "profiling"])
def test_no_file_over_400_lines(package):
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def test_the_rules_see_a_violation():
    """The checks themselves: a made-up arrow up and a made-up circle are caught."""
    GRAPH["placerl.placement.plan.plan"].add("placerl.placement.auto.plan")
    try:
        assert rank("placerl.placement.auto.plan") > rank("placerl.placement.plan.plan")
        assert cycles("placerl.placement")  # plan.plan -> auto.plan -> ... -> plan.plan
    finally:
        GRAPH["placerl.placement.plan.plan"].discard("placerl.placement.auto.plan")
    assert rank("placerl.placement.from_config") == len(ORDER) - 1
