"""Where profiles live and which one a run reuses.

A profile is keyed by the machine (host name and CPU model), the device kind (``cpu``, or the
GPU's name) and the model shape it was measured with. ``placerl plan --auto`` reuses the
profile of this machine and device for the configured shape; failing that, one of the same
machine and device measured on another shape (its rates in FLOP/s and bytes/s carry over, the
fit is less exact), and it says which.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

from placerl.placement.cost.shapes import ModelShape


def store_dir() -> Path:
    root = os.environ.get("PLACERL_PROFILE_DIR") or Path.home() / ".cache" / "placerl" / "profiles"
    return Path(root)


def machine_id() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{socket.gethostname()}|{cpu}|{os.cpu_count()} cpus"


def shape_key(shape: ModelShape) -> str:
    return f"L{shape.layers}-h{shape.hidden}-f{shape.intermediate}-a{shape.heads}-kv{shape.kv_heads}-V{shape.vocab}"


def profile_key(device: str, shape: ModelShape) -> dict[str, str]:
    return {"machine": machine_id(), "device": device, "shape": shape_key(shape)}


def _filename(key: dict[str, str]) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["machine"])[:60]
    return f"{safe}__{key['device']}__{key['shape']}.json"


def default_path(device: str, shape: ModelShape) -> Path:
    return store_dir() / _filename(profile_key(device, shape))


def find_profile(device: str, shape: ModelShape) -> tuple[dict[str, Any], Path, bool] | None:
    """(profile, path, exact shape?) of this machine and device, or None."""
    key = profile_key(device, shape)
    exact = store_dir() / _filename(key)
    if exact.is_file():
        return json.loads(exact.read_text()), exact, True
    for path in sorted(store_dir().glob("*.json")) if store_dir().is_dir() else []:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        k = raw.get("key", {})
        if k.get("machine") == key["machine"] and k.get("device") == key["device"]:
            return raw, path, False
    return None
