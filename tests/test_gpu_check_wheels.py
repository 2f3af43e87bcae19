"""The wheel list for the GPU machine (benchmarks/device/): what it pins, and the checker that
finds a carried wheel's need met by neither the image nor the list, on wheels made here."""

from __future__ import annotations

import importlib.util
import random
import zipfile
from pathlib import Path

import pytest

DEVICE = Path(__file__).resolve().parents[1] / "benchmarks" / "device"


def _checker():
    spec = importlib.util.spec_from_file_location("wheels_check", DEVICE / "wheels_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _checker()


def test_the_list_pins_each_wheel_and_carries_nothing_the_image_has():
    wheels, image = check.pinned(DEVICE / "wheels.txt"), check.pinned(DEVICE / "image.txt")
    dry_run = check.pinned(DEVICE / "dry-run.txt")
    assert all(version for version in wheels.values()), wheels  # one version each, pinned
    assert not set(wheels) & set(image)  # only what the image lacks travels
    assert {"pydantic", "datasets", "tensordict"} <= set(wheels)
    assert not {"ray", "vllm"} & set(wheels)  # too large to travel: their parts skip
    assert set(dry_run) <= set(image)  # the dry run's venv holds the image's packages only
    assert image["torch"] == "2.11.0" and image["transformers"] == "5.17.0"


def _wheel(folder: Path, name: str, version: str, needs: list[str]) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {n}" for n in needs]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", "\n".join(meta))
    return path


def _lists(tmp_path: Path, wheels: dict[str, str], image: dict[str, str | None]):
    listed, there = tmp_path / "wheels.txt", tmp_path / "image.txt"
    listed.write_text("".join(f"{n}=={v}  # why\n" for n, v in wheels.items()))
    there.write_text(
        "# the image\n" + "".join(f"{n}=={v}\n" if v else f"{n}\n" for n, v in image.items())
    )
    return listed, there


CASES = [  # (a need, the image's version of it or None, unmet?)
    ("torch>=2.11.0a0", "2.11.0", False),
    ("torch>=2.13.0a0", "2.11.0", True),
    ("huggingface-hub<2.0,>=0.25.0", "1.33.0", False),
    ("huggingface-hub<3.0,>=1.34.0", "1.33.0", True),
    ("pyarrow>=21.0.0", None, False),  # version not recorded: cannot be judged here
    ("fsspec[http]<=2026.6.0,>=2023.1.0", "2026.9.0", True),
    ("typing_extensions>=4.0; python_version < '3.11'", "3.7.0", False),  # marker off on 3.12
    ("orjson; python_version < '3.13'", "absent", True),  # needed, in neither list
    ("colorama; sys_platform == 'win32'", "absent", False),
    ("pytest; extra == 'test'", "absent", False),
]


@pytest.mark.parametrize("seed", range(12))
def test_the_closure_check_names_every_unmet_need_and_only_those(tmp_path, seed):
    """Random mixes of needs, each met or not, spread over random carried wheels."""
    rng = random.Random(seed)
    picked = rng.sample(CASES, rng.randint(1, len(CASES)))
    image = {"numpy": None}
    for need, version, _ in picked:
        name = need.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
        if version != "absent":
            image[name.lower().replace("_", "-")] = version
    folder = tmp_path / "wheels"
    folder.mkdir()
    carried = {f"pkg{i}": f"1.{i}" for i in range(rng.randint(1, 3))}
    for (name, version), needs in zip(carried.items(), _split(rng, picked, len(carried))):
        _wheel(folder, name, version, [n for n, _, _ in needs] + [f"{name}-dep==0.{version}"])
        _wheel(folder, f"{name}-dep", f"0.{version}", ["numpy"])  # met by the list itself
    listed, there = _lists(
        tmp_path, carried | {f"{n}-dep": f"0.{v}" for n, v in carried.items()}, image
    )
    problems = check.check_closure(folder, listed, there, "3.12")
    unmet = sorted(need.split(";")[0].split("[")[0] for need, _, bad in picked if bad)
    assert len(problems) == len(unmet), problems
    for base in unmet:
        assert any(base.split("<")[0].split(">")[0] in p for p in problems), (base, problems)


def _split(rng, items, parts):
    """``items`` dealt at random into ``parts`` lists."""
    out = [[] for _ in range(parts)]
    for item in items:
        out[rng.randrange(parts)].append(item)
    return out


def test_the_closure_check_wants_exactly_the_listed_wheels(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder, "alpha", "1.0", [])
    _wheel(folder, "alpha", "1.1", [])  # two versions stop the whole install there
    _wheel(folder, "stray", "0.1", [])
    listed, there = _lists(tmp_path, {"alpha": "1.0", "beta": "2.0"}, {})
    problems = " / ".join(check.check_closure(folder, listed, there, "3.12"))
    for word in ("two versions", "stray-0.1-py3-none-any.whl: not in", "pins 1.0", "beta: listed"):
        assert word in problems, problems


def test_the_size_report_counts_the_tree_and_the_wheels(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_bytes(b"x" * 3 * 2**20)
    (tmp_path / ".gitignore").write_text("/.gpu-wheels/\n")
    folder = tmp_path / ".gpu-wheels"
    folder.mkdir()
    (folder / "w-1.0-py3-none-any.whl").write_bytes(b"y" * 2**20)
    lines, travel = check.size_report(tmp_path, folder)
    assert 4.0 <= travel < 4.01  # 3 MiB tree + 1 MiB wheels (the ignored folder once)
    assert any("w-1.0-py3-none-any.whl" in line and "1.00 MiB" in line for line in lines)
    assert any("carry: [.gpu-wheels]" in line for line in lines), lines
