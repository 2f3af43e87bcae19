"""Trainer state is data only: it round-trips exactly and a planted pickle never runs."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from placerl.checkpoint import capture_rng, latest_checkpoint, restore_rng
from placerl.state_io import STATE_JSON, STATE_TENSORS, StateError, load_state_files, save_state
from tests.conftest import fast_overrides


def test_state_round_trips_types_and_rng_exactly(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {
        "optimizer": opt.state_dict(),  # int keys, tuple betas, tensor steps
        "rng": capture_rng(),  # a tuple of ints, a tuple with a uint32 array, a uint8 tensor
        "kl": {"value": 0.1 + 0.2, "nan": float("nan"), "inf": float("-inf"), "none": None},
        "tricky": {"__tensor__": "not a tensor ref", 3: (1, [2.5, "x"])},
        "bools": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
    }
    save_state(state, tmp_path)
    back = load_state_files(tmp_path)
    assert back["kl"]["value"] == 0.1 + 0.2 and back["kl"]["none"] is None
    assert np.isnan(back["kl"]["nan"]) and back["kl"]["inf"] == float("-inf")
    assert back["tricky"] == {"__tensor__": "not a tensor ref", 3: (1, [2.5, "x"])}
    assert back["bools"].dtype == torch.bool and back["empty"].shape == (0, 3)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    for key, value in opt.state_dict()["state"].items():
        for name, tensor in value.items():
            assert torch.equal(back["optimizer"]["state"][key][name], tensor)
    other = torch.optim.AdamW(model.parameters(), lr=1e-3)
    other.load_state_dict(back["optimizer"])  # accepted as is

    restore_rng(back["rng"])
    draws = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng(state["rng"])
    assert draws == (random.random(), np.random.rand(), torch.rand(1))


def test_state_refuses_objects_and_reports_damage(tmp_path):
    with pytest.raises(TypeError, match="cannot be stored"):
        save_state({"x": object()}, tmp_path)
    save_state({"w": torch.ones(1000)}, tmp_path)
    data = (tmp_path / STATE_TENSORS).read_bytes()
    (tmp_path / STATE_TENSORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match="truncated"):
        load_state_files(tmp_path)
    (tmp_path / STATE_JSON).write_text('{"format": "pickle?"}')
    with pytest.raises(StateError, match="not a placerl trainer state"):
        load_state_files(tmp_path)


class _Payload:
    """What an attacker plants: unpickling runs ``open(marker, 'w')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_is_refused_and_never_runs(capsys, tmp_path, tiny_model_dir):
    from placerl.cli import main

    run_dir, marker = tmp_path / "run", tmp_path / "PWNED"
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    args = ["train", str(tmp_path / "c.yaml"), *fast_overrides(tiny_model_dir, run_dir, "sft", 2)]
    assert main(args) == 0
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    assert (checkpoint / STATE_JSON).exists() and not list(checkpoint.glob("*.pt"))
    for name in (STATE_JSON, STATE_TENSORS):  # a run dir as an older placerl wrote it…
        (checkpoint / name).unlink()
    with open(checkpoint / "trainer_state.pt", "wb") as handle:  # …with a payload planted
        pickle.dump({"step": 2, "stage": _Payload(marker)}, handle)
    for old in (run_dir / "checkpoints").glob("step_*"):
        if old != checkpoint:
            for name in (STATE_JSON, STATE_TENSORS):
                (old / name).unlink()
            torch.save({"x": _Payload(marker)}, old / "trainer_state.pt")
    policy_before = (run_dir / "policy" / "model.safetensors").read_bytes()
    capsys.readouterr()

    assert main([*args, "trainer.steps=3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "trainer_state.pt is a pickle" in err and "not loaded" in err and "Traceback" not in err
    assert not marker.exists(), "the planted payload ran"
    assert (run_dir / "policy" / "model.safetensors").read_bytes() == policy_before
