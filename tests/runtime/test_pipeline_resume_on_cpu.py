"""Exact resume with a batch in flight: the checkpoint drains the pipeline (the batch and, when
it lags and will be used again, the rollout copy's weights), so stop + resume = straight run."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from placerl.checkpoint import latest_checkpoint, load_state
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.trainer import train
from tests.conftest import fast_overrides


def _run(model_dir, run_dir, stage, steps, extra, resume=False):
    cfg = load_config(None, [*fast_overrides(model_dir, run_dir, stage, steps), *extra], RunConfig)
    return train(cfg, resume=resume)


def _weights(directory):
    return load_file(next(directory.glob("*.safetensors")))


@pytest.mark.parametrize(
    "stage,max_staleness,sync_every,stop,extra",
    [
        ("grpo", 1, 1, 2, ("reward.function=tests.conftest:length_reward",)),
        # stopped at 3, the copy holds version 2 and samples batch 4 with it: it must be saved
        ("ppo", 2, 2, 3, ("ppo.kl_controller=adaptive", "ppo.minibatches=2")),
    ],
)
def test_resume_with_a_batch_in_flight_is_bitwise_equal_to_straight_run(
    tiny_model_dir, tmp_path, monkeypatch, stage, max_staleness, sync_every, stop, extra
):
    extra = (
        *extra,
        f"placement.max_staleness={max_staleness}",
        f"staleness.sync_every={sync_every}",
    )
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    total = stop + 2
    _run(tiny_model_dir, straight, stage, total, extra)
    _run(tiny_model_dir, stopped, stage, stop, extra)
    state = load_state(latest_checkpoint(stopped / "checkpoints"))["stage"]["pipeline"]
    assert state["in_flight"]["index"] == stop
    assert (state["rollout_weights"] is not None) == (sync_every > 1)
    _run(tiny_model_dir, stopped, stage, total, extra, resume=True)

    names = ["policy", "critic"] if stage == "ppo" else ["policy"]
    for name in names:
        a, b = _weights(straight / name), _weights(stopped / name)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    staleness = [
        line for line in (stopped / "metrics.jsonl").read_text().splitlines() if "staleness" in line
    ]
    assert len(staleness) == total
