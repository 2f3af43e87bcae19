"""DAPO's dynamic sampling survives kill -9: the run is killed while the pipeline samples the
extra rounds of a step (after that step's first round was scored, with the next step's sample
not yet launched), then ``--resume`` ends bitwise equal to a run that was never stopped — the
same weights, the same rounds and filtered shares, the same metrics rows.

The rounds begin and end inside a step (runtime/pipeline.py), so the checkpoint of the step
before holds them in nothing but the prompt stream's position; the resumed run redoes the
killed step from there. The kill point comes from the uninterrupted run: the reward's call
count at the second round of the first step (after step 2) that needed more than one round.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from placerl.checkpoint import latest_checkpoint, load_state
from tests import cli_runs
from tests.runtime import test_kill_in_flight_on_cpu as kill

pytestmark = pytest.mark.slow
DAPO = (
    "rollout.samples_per_prompt=2",
    "dapo.dynamic_sampling.max_rounds=3",
    "dapo.overlong.cache_length=2",
    "rollout.max_new_tokens=4",
    "trainer.steps=5",
)


def test_kill_during_extra_sampling_rounds_then_resume_is_exact(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setitem(kill.CASES, "dapo", DAPO)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = kill._train(tiny_model_dir, straight, "dapo")
    assert done.returncode == 0, done.stderr[-3000:]
    rows_a = cli_runs.metric_rows(straight)
    rounds = [int(r["dynamic_sampling/rounds"]) for r in rows_a]
    assert len(rounds) == 5
    later = [s for s in range(3, 6) if rounds[s - 1] >= 2]
    assert later, f"scenario: a step after 2 that samples extra rounds (rounds {rounds})"
    step = later[0]
    # one reward call per round; killed at the second round of ``step``
    dead = kill._train(tiny_model_dir, killed, "dapo", kill_at=sum(rounds[: step - 1]) + 2)
    assert dead.returncode in (-9, 137), f"not killed: {dead.stderr[-3000:]}"
    saved = load_state(latest_checkpoint(killed / "checkpoints"))["stage"]["pipeline"]
    assert saved["version"] == step - 1
    resumed = kill._train(tiny_model_dir, killed, "dapo", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a = load_file(straight / "policy" / "model.safetensors")
    b = load_file(killed / "policy" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after kill -9 and resume"
    rows_b = cli_runs.metric_rows(killed)
    assert [r["step"] for r in rows_b] == list(range(1, 6))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key, value in ra.items():
            if not key.startswith(("time/", "throughput/tokens_per_s")):
                assert rb[key] == value, f"step {ra['step']}: {key}"
