"""Where the GPU check meets placerl's planner: the one place to follow if the planner moves.

- ``peak_bf16``: the device's dense bf16 peak from the hardware specs
  (``placerl.placement.cost.hardware``), matched on the CUDA device name as ``nvidia-smi`` gives it;
- ``profile``: ``placerl profile CONFIG --device gpu --force`` (the CLI, in a subprocess);
- ``predicted_step``: ``placerl plan CONFIG --auto --json`` (the CLI), the ``local`` plan's
  predicted step time for the run the check measured, its settings held to the measured
  run's (micro-batch, checkpointing, offload).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "placerl.cli"]  # what the `placerl` command runs


def peak_bf16(device_name: str) -> tuple[float, str] | None:
    """(TFLOP/s, source) of the spec whose name is in ``device_name``, else None."""
    try:
        from placerl.placement.cost.hardware import device_specs
    except ImportError:  # the specs moved: the caller falls back to --peak-tflops
        return None
    label = device_name.replace(" ", "-").upper()
    for name, spec in device_specs().items():
        if name in label:
            return spec.bf16_dense_tflops, f"{spec.name} spec"
    return None


def _show(value) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def held_settings(cfg) -> list[str]:
    """The measured run's micro-batch, checkpointing and offload as overrides: the search
    holds to what is set, so it scores the run that was measured."""
    return [
        f"trainer.micro_batch_size={_show(cfg.trainer.micro_batch_size)}",
        f"model.gradient_checkpointing={_show(cfg.model.gradient_checkpointing)}",
        f"placement.offload={_show(cfg.placement.offload)}",
    ]


def config_file(work: Path, stage: str) -> Path:
    """A config file for the CLI; the check's overrides say the rest."""
    path = work / f"{stage}.yaml"
    path.write_text(f"stage: {stage}\n")
    return path


def profile(work: Path, stage: str, overrides: list[str], out: Path, env: dict, timeout: float):
    """``placerl profile --device gpu --force`` of the config's model; (exit code, tail)."""
    argv = [*CLI, "profile", str(config_file(work, stage)), *overrides]
    argv += ["--device", "gpu", "--force", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    print(done.stdout + done.stderr, end="")
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()[-1:]


def predicted_step(work: Path, stage: str, overrides: list[str], out: Path, env: dict) -> dict:
    """The planner's ``local`` candidate for the config: {step_s, phases, calibration} (the
    whole search is written to ``out``); raises RuntimeError with the CLI's words."""
    argv = [*CLI, "plan", str(config_file(work, stage)), *overrides, "--auto", "--json"]
    # a stored profile is used; none is *taken* here (plan --auto would profile first: a CPU
    # profile needs Ray, which the GPU machine lacks, and the GPU's has a part of its own)
    argv += ["--top", "100", "--no-profile"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode not in (0, 2) or not done.stdout.strip().startswith("{"):
        raise RuntimeError(f"placerl plan exit {done.returncode}: {done.stderr.strip()[-300:]}")
    search = json.loads(done.stdout)
    Path(out).write_text(json.dumps(search, indent=2))
    local = [c for c in search["candidates"] if c["plan"].get("strategy") == "local"]
    if not local or local[0]["predicted"]["step_s"] is None:
        raise RuntimeError("placerl plan --auto scored no local plan")
    predicted = local[0]["predicted"]
    return {
        "step_s": predicted["step_s"],
        "phases": predicted["phases"],
        "feasible": local[0]["feasible"],
        "calibration": search.get("calibration") or "",
    }
