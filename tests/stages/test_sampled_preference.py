"""The sampled-preference stages (online_dpo, rso, brain) train end to end on the tiny model,
and the sampling policy lags the trained one exactly as ``placement.max_staleness`` allows:
they run through the one experience pipeline (runtime/pipeline.py), whose rollout copy, when
there is one, is ``stage.pipeline.roles.rollout`` and its sync ``stage.pipeline.syncer``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.stages import build_stage
from placerl.trainer import train
from tests.conftest import fast_overrides

LENGTH_REWARD = "reward.function=tests.conftest:length_reward"  # signal even for a random model


def _cfg(model_dir, run_dir, stage, steps=3, extra=()):
    overrides = [*fast_overrides(model_dir, run_dir, stage, steps), LENGTH_REWARD, *extra]
    return load_config(None, overrides, RunConfig)


def _weights(directory):
    return load_file(next(directory.glob("*.safetensors")))


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "stage,extra",
    [
        ("online_dpo", ("rollout.samples_per_prompt=2",)),
        (
            "online_dpo",
            (
                "rollout.samples_per_prompt=4",
                "online_dpo.pairs_per_prompt=2",
                "preference.loss=ipo",
                "placement.max_staleness=1",
            ),
        ),
        ("rso", ()),
        ("rso", ("rso.ranking=tournament", "preference.loss=slic")),
        ("brain", ()),
        ("brain", ("brain.proposal=policy", "placement.max_staleness=1")),
    ],
)
def test_stage_trains_with_finite_metrics(tiny_model_dir, tmp_path, stage, extra):
    train(_cfg(tiny_model_dir, tmp_path, stage, extra=extra))
    before, after = _weights(tiny_model_dir), _weights(tmp_path / "policy")
    assert any(not torch.equal(before[k], after[k]) for k in after), "training changed nothing"
    steps = [m for m in _metrics(tmp_path) if m["step"] > 0]
    assert [m["step"] for m in steps] == [1, 2, 3]
    for m in steps:
        for key, value in m.items():
            assert math.isfinite(value), f"step {m['step']}: {key} = {value}"
        assert m["time/generate"] > 0 and m["time/update"] > 0
    loss_key = "loss/brain" if stage == "brain" else "loss/preference"
    assert all(loss_key in m for m in steps)
    if stage != "brain":
        assert sum(m["pairs/count"] for m in steps) > 0


def _stage(model_dir, run_dir, stage, extra=()):
    return build_stage(_cfg(model_dir, run_dir, stage, steps=4, extra=extra))


def test_on_policy_rollout_shares_the_trained_module(tiny_model_dir, tmp_path):
    stage = _stage(tiny_model_dir, tmp_path, "online_dpo", ("rollout.samples_per_prompt=2",))
    assert stage.pipeline.syncer is None and stage.roles.rollout.model is stage.policy


def test_on_policy_copy_synced_every_step_equals_the_shared_module(tiny_model_dir, tmp_path):
    """Staleness 0 is the same training whether the rollout shares the actor's module (one
    process) or holds a copy refreshed before every step (a separate rollout)."""
    import dataclasses

    from placerl.models.device import CPU
    from placerl.models.loading import load_policy
    from placerl.roles.build import sampling_params
    from placerl.roles.rollout import RolloutWorker
    from placerl.runtime.local import on_device
    from placerl.runtime.sync.consumers import LocalShadow
    from placerl.timing import PhaseTimer

    extra = ("rollout.samples_per_prompt=2",)
    shared = _stage(tiny_model_dir, tmp_path / "a", "online_dpo", extra)
    separate = _stage(tiny_model_dir, tmp_path / "b", "online_dpo", extra)
    cfg = separate.cfg
    worker = RolloutWorker(
        load_policy(tiny_model_dir), separate.tokenizer, sampling_params(cfg), seed=cfg.seed
    )
    pipeline = separate.pipeline
    pipeline.roles = dataclasses.replace(pipeline.roles, rollout=on_device(worker, CPU))
    pipeline.syncer = LocalShadow(separate.policy, worker.model)
    assert shared.pipeline.syncer is None and separate.pipeline.syncer is not None
    for step in range(3):
        a = shared.step(step, PhaseTimer())
        b = separate.step(step, PhaseTimer())
        assert a["loss/preference"] == b["loss/preference"]
    for key, value in shared.policy.state_dict().items():
        assert torch.equal(value, separate.policy.state_dict()[key]), key


def test_snapshot_is_refreshed_when_its_lag_would_exceed_the_bound(tiny_model_dir, tmp_path):
    from placerl.timing import PhaseTimer

    extra = ("rollout.samples_per_prompt=2", "placement.max_staleness=2")
    stage = _stage(tiny_model_dir, tmp_path, "online_dpo", extra)
    timer, lags, same = PhaseTimer(), [], []
    for step in range(6):
        metrics = stage.step(step, timer)
        lags.append(metrics["pipeline/staleness"])
        snapshot = stage.pipeline.roles.rollout.model.state_dict()
        same.append(all(torch.equal(v, stage.policy.state_dict()[k]) for k, v in snapshot.items()))
    # sample k+1 is launched before update k (one batch in flight); the copy is refreshed
    # before launching sample 3 (at version 2), as a lag of 3 would exceed 2, and so on
    assert lags == [0, 1, 2, 1, 2, 1]
    assert stage.pipeline.syncer is not None and same == [False] * 6  # trains after sampling


def test_frozen_sampler_is_the_initial_policy_throughout(tiny_model_dir, tmp_path):
    """RSO samples π_sft at every step; a staleness bound ≥ steps does the same for online DPO
    (offline DPO on SFT samples)."""
    from placerl.timing import PhaseTimer

    initial = _weights(tiny_model_dir)
    for stage_name, extra in (
        ("rso", ()),
        ("online_dpo", ("rollout.samples_per_prompt=2", "placement.max_staleness=10")),
    ):
        stage = _stage(tiny_model_dir, tmp_path / stage_name, stage_name, extra)
        lags = [stage.step(step, PhaseTimer())["pipeline/staleness"] for step in range(3)]
        assert lags == [0, 1, 2]
        sampler = stage.pipeline.roles.rollout.model.state_dict()
        assert all(torch.equal(sampler[k], initial[k]) for k in initial)


def test_resume_with_a_stale_snapshot_is_exact(tiny_model_dir, tmp_path):
    """max_staleness 1: the snapshot refreshed at step 3 is in the step-3 checkpoint."""
    extra = ("rollout.samples_per_prompt=2", "placement.max_staleness=1")
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(_cfg(tiny_model_dir, straight, "online_dpo", 4, extra))
    train(_cfg(tiny_model_dir, stopped, "online_dpo", 3, extra))
    train(_cfg(tiny_model_dir, stopped, "online_dpo", 4, extra), resume=True)
    a, b = _weights(straight / "policy"), _weights(stopped / "policy")
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    last = [m for m in _metrics(stopped) if m["step"] == 4]
    assert len(last) == 1 and last[0]["pipeline/staleness"] == 1.0


@pytest.mark.parametrize(
    "overrides,where",
    [
        (("rollout.samples_per_prompt=1",), "rollout.samples_per_prompt"),
        (("rollout.samples_per_prompt=3", "online_dpo.pairs_per_prompt=2"), "pairs_per_prompt"),
    ],
)
def test_online_dpo_config_errors_name_the_key(tiny_model_dir, tmp_path, overrides, where):
    with pytest.raises(UserError) as err:
        _stage(tiny_model_dir, tmp_path, "online_dpo", overrides)
    assert where in str(err.value)
