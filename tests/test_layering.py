"""The import rules that keep the house's layers apart (placerl/README.md).

- ``placerl/algos`` imports nothing from ``placerl/runtime`` or ``placerl/roles``: algorithms
  call roles through ``algos.online``'s protocols and never see where they run;
- ``placerl/roles`` imports no algorithm module: the math both use (losses, advantages,
  skipping) lives in the algos' math modules below both, never in ``ppo.py`` and friends.

Imports are read from the source (inside functions too), not from a running interpreter.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "placerl"
# the algos' math modules: tensors in, tensors out, no algorithm in them
ALGOS_MATH = {"core", "kl", "objectives", "skipping", "kl_control", "preference", "registry"}


def imports(package: str) -> dict[str, set[str]]:
    """Module path → every ``placerl.*`` module it imports."""
    out = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        out[str(path.relative_to(PACKAGE.parent))] = {m for m in found if m.startswith("placerl")}
    return out


def test_algos_import_nothing_from_the_runtime_or_the_roles():
    bad = {
        module: sorted(m for m in found if m.startswith(("placerl.runtime", "placerl.roles")))
        for module, found in imports("algos").items()
    }
    assert not {m: found for m, found in bad.items() if found}


def test_roles_import_no_algorithm_module():
    algorithms = {
        f"placerl.algos.{path.stem}"
        for path in (PACKAGE / "algos").glob("*.py")
        if path.stem not in ALGOS_MATH | {"__init__"}
    }
    assert "placerl.algos.ppo" in algorithms and "placerl.algos.online" in algorithms
    bad = {module: sorted(found & algorithms) for module, found in imports("roles").items()}
    assert not {m: found for m, found in bad.items() if found}


def test_the_rules_see_imports():
    """The reader finds imports at any depth (a rule that reads nothing passes trivially)."""
    assert "placerl.algos.objectives" in imports("roles")["placerl/roles/actor.py"]
    assert "placerl.algos.online" in imports("algos")["placerl/algos/ppo.py"]
