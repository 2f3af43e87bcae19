"""Trainer state as data only: tensors in safetensors, everything else in JSON.

A checkpoint someone hands you must not run code when it is resumed, so the state is never
pickled. ``save_state`` walks the nested state (dicts, lists, tuples, str/int/float/bool/None,
torch tensors, numpy arrays) and writes ``trainer_state.safetensors`` (every tensor, under a
number) and ``trainer_state.json`` (the structure, with references to those numbers). Reading
it back parses JSON and safetensors — neither can execute anything — and rebuilds the same
types, so random-generator states (a tuple for Python, a tuple holding a uint32 array for
numpy, a uint8 tensor for torch) and optimizer states (int keys) round-trip exactly.

Encoding of what JSON lacks: ``{"__tuple__": [...]}``, ``{"__items__": [[key, value], ...]}``
for dicts whose keys are not all plain strings, ``{"__tensor__": "7"}``, and
``{"__ndarray__": "8", "dtype": "<u4", "shape": [624]}`` (the array's bytes as a uint8
tensor). Floats keep their exact value (JSON ``repr``; NaN and inf as ``NaN``/``Infinity``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
FORMAT = "placerl-trainer-state"
VERSION = 1
_MARKERS = ("__tuple__", "__items__", "__tensor__", "__ndarray__")


class StateError(Exception):
    """A state file that cannot be read back (truncated, edited, another format)."""


def save_state(state: dict, directory: Path) -> None:
    """Write ``state`` as ``trainer_state.json`` + ``trainer_state.safetensors``."""
    tensors: dict[str, torch.Tensor] = {}
    body = _encode(state, tensors, "state")
    save_file(tensors, str(directory / STATE_TENSORS))
    document = {"format": FORMAT, "version": VERSION, "state": body}
    (directory / STATE_JSON).write_text(json.dumps(document))


def load_state_files(directory: Path) -> dict:
    """Read the state written by ``save_state``; ``StateError`` says what is wrong."""
    try:
        document = json.loads((directory / STATE_JSON).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StateError(f"{STATE_JSON} cannot be read ({err})") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateError(f"{STATE_JSON} is not a placerl trainer state")
    if document.get("version") != VERSION:
        raise StateError(f"{STATE_JSON} has version {document.get('version')}, not {VERSION}")
    try:
        tensors = load_file(str(directory / STATE_TENSORS))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise StateError(f"{STATE_TENSORS} is truncated or damaged ({err})") from err
    try:
        return _decode(document["state"], tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise StateError(f"{STATE_JSON} does not match {STATE_TENSORS} ({err!r})") from err


def _encode(value: Any, tensors: dict, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu").contiguous().clone()  # own storage
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"trainer state {path}: numpy object arrays cannot be stored")
        key = str(len(tensors))
        raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8).copy()
        tensors[key] = torch.from_numpy(raw)
        return {"__ndarray__": key, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in value):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {
            "__items__": [
                [_encode(k, tensors, path), _encode(v, tensors, f"{path}.{k}")]
                for k, v in value.items()
            ]
        }
    raise TypeError(f"trainer state {path}: a {type(value).__name__} cannot be stored as data")


def _decode(value: Any, tensors: dict) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if len(value) == 1 and "__items__" in value:
        return {_freeze(_decode(k, tensors)): _decode(v, tensors) for k, v in value["__items__"]}
    if len(value) == 1 and "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        raw = tensors[value["__ndarray__"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    return {k: _decode(v, tensors) for k, v in value.items()}


def _freeze(key: Any) -> Any:
    """Dict keys must be hashable: a list key (never written by us) becomes a tuple."""
    return tuple(key) if isinstance(key, list) else key
