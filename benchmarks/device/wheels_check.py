"""Checks on the wheels that travel to the GPU machine (benchmarks/device/wheels.txt).

- ``closure``: the folder holds exactly the listed wheels, one version each, and every need
  of each (``Requires-Dist``, extras left out, markers read for the target Python on Linux
  x86_64) is met by the image (image.txt, at its version where one was read) or by the list;
- ``sizes``: each wheel's size, and the working tree that travels (git's tracked and
  untracked-not-ignored files) plus the wheels, against the device tool's 64 MiB;
- ``installed``: on the GPU machine, after the install: each carried wheel's needs against
  the versions actually there (a warning per unmet one; the image's versions were not all
  read ahead of time).

Standard library and ``packaging`` (pip's own copy where it is not installed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pragma: no cover - the image and our venvs have packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

HERE = Path(__file__).resolve().parent
MiB = 2**20
LIMIT_MIB = 64  # what the device tool carries: the working tree plus carried paths
BUDGET_MIB = 48  # "well under" the limit: room for what a session adds before a call


def requirement_lines(path: Path) -> list[str]:
    """A requirements file's lines, comments and blanks left out."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def pinned(path: Path) -> dict[str, str | None]:
    """name -> version (None where the file names no version)."""
    out = {}
    for line in requirement_lines(path):
        req = Requirement(line)
        versions = [s.version for s in req.specifier if s.operator == "=="]
        out[canonicalize_name(req.name)] = versions[0] if versions else None
    return out


def wheel_metadata(wheel: Path) -> tuple[str, str, list[Requirement]]:
    """(name, version, needs) from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(name).decode())
    needs = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    return canonicalize_name(meta["Name"]), meta["Version"], needs


def environment(python_version: str) -> dict[str, str]:
    """Marker values of CPython ``python_version`` on Linux x86_64, no extra."""
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


def active_needs(wheel: Path, python_version: str) -> tuple[str, str, list[Requirement]]:
    name, version, needs = wheel_metadata(wheel)
    env = environment(python_version)
    return name, version, [r for r in needs if r.marker is None or r.marker.evaluate(env)]


def unmet(req: Requirement, version: str | None, where: str) -> str | None:
    """Why ``version`` (None: not recorded) of ``where`` does not meet ``req``, or None."""
    if version is None:
        return None
    if req.specifier.contains(Version(version).base_version, prereleases=True):
        return None
    return f"wants {req}, {where} has {version}"


def check_closure(wheels: Path, listed: Path, image: Path, python_version: str) -> list[str]:
    """Problems with the folder against the list and the image (empty: none)."""
    wanted, there = pinned(listed), pinned(image)
    found: dict[str, str] = {}
    problems = []
    for wheel in sorted(wheels.glob("*.whl")):
        name, version, needs = active_needs(wheel, python_version)
        if name in found:
            problems.append(f"{name}: two versions ({found[name]}, {version}); keep one")
        found[name] = version
        if name not in wanted:
            problems.append(f"{wheel.name}: not in {listed.name}")
        elif wanted[name] not in (None, version):
            problems.append(f"{wheel.name}: {listed.name} pins {wanted[name]}")
        for req in needs:
            need = canonicalize_name(req.name)
            if need in wanted:
                why = unmet(req, wanted[need], listed.name)
            elif need in there:
                why = unmet(req, there[need], "the image")
            else:
                why = f"wants {req}: neither the image nor {listed.name} has it"
            if why:
                problems.append(f"{name} {version} {why}")
    problems += [f"{name}: listed, no wheel in {wheels}" for name in wanted if name not in found]
    return problems


def tree_bytes(root: Path) -> int:
    """What the device tool sends: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    files = (root / p.decode() for p in out.split(b"\0") if p)
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def size_report(root: Path, wheels: Path) -> tuple[list[str], float]:
    """Lines to print, and what would travel in MiB."""
    lines = []
    total_wheels = 0
    for wheel in sorted(wheels.glob("*.whl")):
        size = wheel.stat().st_size
        total_wheels += size
        lines.append(f"  {wheel.name:<78} {size / MiB:6.2f} MiB")
    tree = tree_bytes(root)
    travel = (tree + total_wheels) / MiB
    lines += [
        f"wheels: {len(lines)} files, {total_wheels / MiB:.2f} MiB",
        f"working tree (tracked + untracked, not ignored): {tree / MiB:.2f} MiB",
        f"travels with `carry: [{wheels.relative_to(root) if wheels.is_relative_to(root) else wheels}]`: "
        f"{travel:.2f} MiB of the device tool's {LIMIT_MIB} MiB (budget here {BUDGET_MIB} MiB)",
    ]
    return lines, travel


def check_installed(wheels: Path) -> list[str]:
    """Each carried wheel's needs against the versions importable here (sys.path)."""
    from importlib.metadata import PackageNotFoundError, version

    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    problems = []
    for wheel in sorted(wheels.glob("*.whl")):
        name, ver, needs = active_needs(wheel, here)
        for req in needs:
            try:
                found = version(req.name)
            except PackageNotFoundError:
                problems.append(f"{name} {ver} wants {req}: not installed here")
                continue
            why = unmet(req, found, "this machine")
            if why:
                problems.append(f"{name} {ver} {why}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("check", choices=("closure", "sizes", "installed"))
    p.add_argument("--wheels", type=Path, required=True, help="the wheel folder")
    p.add_argument("--python-version", default="3.12", help="closure: the target Python")
    p.add_argument("--root", type=Path, default=HERE.parents[1], help="sizes: the repository")
    args = p.parse_args(argv)
    if args.check == "sizes":
        lines, travel = size_report(args.root.resolve(), args.wheels.resolve())
        print("\n".join(lines))
        if travel > BUDGET_MIB:
            print(f"error: {travel:.1f} MiB would travel, over the {BUDGET_MIB} MiB budget")
            return 1
        return 0
    if args.check == "installed":
        problems = check_installed(args.wheels)
        for line in problems:
            print(f"warning: {line}")
        return 0
    problems = check_closure(
        args.wheels, HERE / "wheels.txt", HERE / "image.txt", args.python_version
    )
    for line in problems:
        print(f"error: {line}")
    if not problems:
        print(f"every need of the {len(list(args.wheels.glob('*.whl')))} wheels is met")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
