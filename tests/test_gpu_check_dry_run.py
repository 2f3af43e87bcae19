"""The GPU machine's route, rehearsed here: a venv holding only the image's packages
(benchmarks/device/dry-run.txt, less anything image.txt does not name: no pydantic, datasets,
tensordict, ray), the wheels of benchmarks/device/wheels.txt downloaded by the same script for
this Python, and ``benchmarks/gpu_check.sh --cpu --tiny`` run with that venv's ``python3``: it
must find placerl's needs missing, install the wheels with ``--no-index --no-deps --target``,
and run every part to the table, under ``$OUT`` as the device tool returns it.

The venv is built once per content of dry-run.txt / image.txt and Python (under
``~/.cache/placerl/gpu-dry-run``; pip's own cache and index make the first build ~1.5 min).
Skipped, with the reason, only where PyPI cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "benchmarks" / "device"
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
ABSENT = ("pydantic", "datasets", "tensordict", "ray")  # not in the image: the wheels bring 3


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text.split("==")[0].split("#")[0].strip()).lower()


def _image_names() -> set[str]:
    lines = (DEVICE / "image.txt").read_text().splitlines()
    return {_name(line) for line in lines if line.strip() and not line.startswith("#")}


def _pypi_reachable() -> str | None:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pyvers/", timeout=15).close()
    except OSError as err:
        return f"PyPI is unreachable ({err}): the dry run downloads the image's packages"
    return None


def _build_venv(where: Path) -> None:
    """``where``: a venv of dry-run.txt's packages with their needs, less what the image lacks."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "-r", str(DEVICE / "dry-run.txt")], check=True)
    listed = subprocess.run([*pip, "list", "--format=json"], capture_output=True, check=True)
    extra = [p["name"] for p in json.loads(listed.stdout) if _name(p["name"]) not in _image_names()]
    if extra:  # e.g. pydantic, which a newer typer than the image's pulls in
        subprocess.run([*pip, "uninstall", "-q", "-y", *extra], check=True)


@pytest.fixture(scope="module")
def image_venv() -> Path:
    why = _pypi_reachable()
    if why:
        pytest.skip(why)
    key = hashlib.sha256(
        (DEVICE / "dry-run.txt").read_bytes() + (DEVICE / "image.txt").read_bytes()
    ).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "placerl"
    venv = cache / "gpu-dry-run" / f"venv-py{PY_VERSION}-{key}"
    if not (venv / "ready").exists():
        building = venv.with_name(venv.name + f".building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        try:
            _build_venv(building)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        (building / "ready").write_text("built from dry-run.txt\n")
        shutil.rmtree(venv, ignore_errors=True)
        building.rename(venv)  # whole or not at all; used as `python -m`, so a moved venv runs
    return venv


def test_the_gpu_check_runs_through_the_wheel_route_in_a_venv_of_the_image(image_venv, tmp_path):
    python = image_venv / "bin" / "python3"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, check=True
    )
    names = {_name(p["name"]) for p in json.loads(listed.stdout)}
    assert names <= _image_names(), names - _image_names()  # the image's packages, no other
    assert not names & set(ABSENT)

    wheels = tmp_path / "wheels"
    prepared = subprocess.run(
        ["bash", str(DEVICE / "wheels.sh"), "--python-version", PY_VERSION, "--dest", str(wheels)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert (
        "every need of the" in prepared.stdout and "MiB of the device tool's 64" in prepared.stdout
    )

    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHON")}
    env |= {
        "PATH": f"{image_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",  # python3: the venv's
        "OUT": str(out),
        "TMPDIR": str(tmp),
        "PLACERL_GPU_WHEELS": str(wheels),
    }
    args = ["--cpu", "--tiny", "--steps", "1", "--prompts", "2", "--samples", "2"]
    args += ["--new-tokens", "4", "--pairs", "4", "--rows", "4,16"]
    ran = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    log = ran.stdout + ran.stderr
    assert ran.returncode == 0, log[-6000:]
    assert f"installing {len(list(wheels.glob('*.whl')))} wheels from {wheels}" in log

    table = (out / "gpu_check.md").read_text()
    rows = [
        *(f"| stages | {stage} | ok |" for stage in ("sft", "dpo", "grpo", "ppo", "brain")),
        "| steps | grpo step time |",
        "| steps | dpo update MFU |",
        "| generation | placerl sampler, 16 rows |",
        "| generation | model.generate, 4 rows |",
        "| memory | dpo LoRA r=16 |",
        "| ray | Flatten on Ray | skipped: Ray is not installed",
        "| plan | grpo step predicted, before the profile |",
        "| plan | predicted / measured, before the profile |",
        "| setup | (part) | ok | 9 wheels installed |",
    ]
    for row in rows:
        assert row in table, table
    assert "| exit" not in table and "timed out" not in table, table
    # what the device tool brings back: at most 8 files, plain names, at most 2 folders down
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(re.fullmatch(r"[\w.-]+", p.name) for p in files), files
    assert {"gpu_check.md", "gpu_check.jsonl", "gpu_check.log"} <= {p.name for p in files}
