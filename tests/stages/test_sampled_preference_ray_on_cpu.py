"""Online DPO samples and trains through the same runtime as PPO: on two Ray workers (Flatten)
it follows the local trajectory, and what Flatten cannot do yet is refused before Ray starts.

Same tolerances as tests/runtime/test_invariants_on_cpu.py (why: see its docstring). The
preference loss is a mean over pairs, so a worker's share must weigh by pairs, not tokens:
chosen responses are the longer ones (length reward), so a token weighting would show.
"""

from __future__ import annotations

import json

import pytest

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.stages.sampled_preference import build_sampled_preference_stage
from tests.conftest import fast_overrides
from tests.runtime.test_invariants_on_cpu import (
    TWO_WORKERS,
    assert_same_trajectory,
    assert_same_weights,
    run,
)

ray = pytest.importorskip("ray")

ONLINE_DPO = [
    "reward.function=tests.conftest:length_reward",
    "rollout.samples_per_prompt=4",  # 3 prompts × 4 samples; up to 6 pairs over two workers
    "online_dpo.pairs_per_prompt=2",
    "online_dpo.minibatches=2",
]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_online_dpo_on_two_flatten_workers_follows_the_local_trajectory(
    tiny_model_dir, tmp_path, local_ray
):
    local = run(tiny_model_dir, tmp_path / "local", "online_dpo", 2, ONLINE_DPO)
    placed_dir = tmp_path / "flatten"
    extra = [*ONLINE_DPO, "placement.strategy=flatten", *TWO_WORKERS]
    placed = run(tiny_model_dir, placed_dir, "online_dpo", 2, extra)

    assert all(line["pairs/count"] >= 2 for line in local), "scenario: pairs on both workers"
    keys = [
        "loss/preference",
        "preference/reward_accuracy",
        "preference/margin",
        "actor/grad_norm",
        "pairs/count",
        "reward/mean",
    ]
    assert_same_trajectory(local, placed, keys)
    assert_same_weights(tmp_path / "local" / "policy", placed_dir / "policy")
    spans = [json.loads(s) for s in (placed_dir / "timeline.jsonl").read_text().splitlines()]
    assert {(s["worker"], s["phase"]) for s in spans} >= {
        ("all/w0", "rollout.generate"),
        ("all/w1", "rollout.generate"),
        ("all/w0", "actor.fit_grouped"),
        ("all/w1", "actor.fit_grouped"),
        ("all/w0", "reference.log_probs"),
    }


@pytest.mark.parametrize(
    "stage,overrides,where",
    [
        ("online_dpo", ("placement.max_staleness=1",), "placement.max_staleness"),
        ("rso", (), "placement.strategy"),
        ("brain", ("brain.proposal=sft",), "placement.strategy"),
        ("online_dpo", ("placement.strategy=separate",), "placement.strategy"),
    ],
)
def test_what_flatten_cannot_sample_is_refused_before_workers_start(
    tiny_model_dir, tmp_path, monkeypatch, stage, overrides, where
):
    """A stale snapshot or a frozen sampler needs a policy copy that Flatten workers lack."""
    from placerl.stages import sampled_preference

    def no_workers(*_):
        raise AssertionError("workers started before the config was checked")

    monkeypatch.setattr(sampled_preference, "build_runtime", no_workers)
    flatten = ["placement.strategy=flatten", *TWO_WORKERS]
    base = fast_overrides(tiny_model_dir, tmp_path, stage, 2)
    samples = ["rollout.samples_per_prompt=2"] if stage == "online_dpo" else []
    cfg = load_config(None, [*base, *samples, *flatten, *overrides], RunConfig)
    with pytest.raises(UserError) as err:
        build_sampled_preference_stage(cfg)
    assert where in str(err.value)
