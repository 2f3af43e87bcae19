"""Online DPO samples and trains through the same runtime as PPO: on two Ray workers (Flatten)
it follows the local trajectory (tests/runtime/test_online_placements_on_cpu.py covers RSO and
BRAIn, Separate, lagging and frozen rollouts).

Same tolerances as tests/runtime/test_invariants_on_cpu.py (why: see its docstring). The
preference loss is a mean over pairs, so a worker's share must weigh by pairs, not tokens:
chosen responses are the longer ones (length reward), so a token weighting would show.
"""

from __future__ import annotations

import json

import pytest

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
