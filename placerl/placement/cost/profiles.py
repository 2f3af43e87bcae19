"""Where profiles live, and which ones a run may use.

A profile is keyed by the machine (host name and CPU model), the device kind (``cpu``, or the
GPU's name) and the model shape it was measured with. ``profiles_for`` lists this machine's
profiles of a device, the configured shape's first and then the others from the *closest*
shape (``shape_distance``): a profile of another shape is used only through the cost model's
scaling (FLOPs, bytes, KV cache), and the nearer its matrix widths, depth and vocabulary are to
this model's, the more of its rates carry over. Whether one may be used now is
``calibration``'s question (its conditions against a probe of the machine).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from placerl.placement.cost.shapes import ModelShape

# a shape_key: L6-h256-f1024-a8-kv4-V512
KEY = re.compile(r"L(\d+)-h(\d+)-f(\d+)-a(\d+)-kv(\d+)-V(\d+)")


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


def shape_of_key(key: str) -> ModelShape | None:
    match = KEY.fullmatch(key)
    if match is None:
        return None
    layers, hidden, inter, heads, kv, vocab = (int(g) for g in match.groups())
    return ModelShape(key, layers, hidden, inter, heads, kv, vocab)


def shape_distance(a: ModelShape, b: ModelShape) -> float:
    """How far apart two shapes are for the cost model, in log units: the matrix widths
    (hidden, MLP) set the achieved FLOP/s, the depth the per-block overheads, the vocabulary
    the head's share (half weight: one matrix of many). 0 for the same shape; a doubling of
    every width and of the depth is about 3."""
    terms = (
        (a.hidden, b.hidden, 1.0),
        (a.intermediate, b.intermediate, 1.0),
        (a.layers, b.layers, 1.0),
        (a.vocab, b.vocab, 0.5),
    )
    return sum(w * abs(math.log(x / y)) for x, y, w in terms)


def profile_key(device: str, shape: ModelShape) -> dict[str, str]:
    return {"machine": machine_id(), "device": device, "shape": shape_key(shape)}


def _filename(key: dict[str, str]) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["machine"])[:60]
    return f"{safe}__{key['device']}__{key['shape']}.json"


def default_path(device: str, shape: ModelShape) -> Path:
    return store_dir() / _filename(profile_key(device, shape))


def profiles_for(device: str, shape: ModelShape) -> Iterator[tuple[dict[str, Any], Path, float]]:
    """(profile, path, shape distance) of this machine and device, the nearest shape first
    (distance 0: this shape)."""
    key = profile_key(device, shape)
    found = []
    for path in sorted(store_dir().glob("*.json")) if store_dir().is_dir() else []:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        k = raw.get("key", {})
        if k.get("machine") != key["machine"] or k.get("device") != key["device"]:
            continue
        other = shape_of_key(str(k.get("shape", "")))
        if other is not None:
            found.append((raw, path, shape_distance(shape, other)))
    yield from sorted(found, key=lambda f: f[2])


def find_profile(device: str, shape: ModelShape) -> tuple[dict[str, Any], Path, bool] | None:
    """(profile, path, exact shape?) of the nearest stored shape, or None."""
    for raw, path, distance in profiles_for(device, shape):
        return raw, path, distance == 0
    return None
