"""Episodes under every placement (issue 24): the same seed gives the same episodes and the
same training in one process (local) and on two Ray workers — Flatten, Separate (staleness 0
and 1, against local at the same staleness), Interleave. The controller draws each episode's
noise for all its turns, so a worker that runs a shard of the episodes samples exactly the
tokens the local run samples; losses then agree within the invariant tests' tolerances
(tests/runtime/test_invariants_on_cpu.py says why not bitwise)."""

from __future__ import annotations

import pytest

from tests.runtime.test_invariants_on_cpu import (
    TWO_WORKERS,
    assert_same_trajectory,
    assert_same_weights,
    run,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

EPISODES = [
    "env.factory=tests.episodes.envs:echo_env",
    "env.max_tokens=40",
    "rollout.max_new_tokens=6",
    "rollout.samples_per_prompt=2",
]
# counted from the episodes themselves: equal only if every worker sampled the same tokens
EXACT = ["env/turns", "env/tokens_model", "env/tokens_observation", "env/reward", "reward/mean"]
GRPO_KEYS = ["loss/policy", "loss/kl", "actor/grad_norm", "kl/mean"]
CASES = {  # name: (stage, placement overrides, compared metrics)
    "flatten": ("grpo", ["placement.strategy=flatten", *TWO_WORKERS], GRPO_KEYS),
    "separate": ("grpo", ["placement.strategy=separate", *TWO_WORKERS], GRPO_KEYS),
    "separate-stale": (
        "grpo",
        ["placement.strategy=separate", *TWO_WORKERS, "placement.max_staleness=1"],
        ["loss/policy", "actor/grad_norm"],
    ),
    "interleave": (
        "ppo",
        ["placement.strategy=interleave", *TWO_WORKERS],
        ["loss/policy", "loss/value", "actor/grad_norm", "critic/grad_norm"],
    ),
}
STAGE_EXTRA = {"grpo": ["grpo.kl_coef=0.05"], "ppo": ["ppo.minibatches=2"]}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("case", sorted(CASES))
def test_episodes_train_the_same_under_every_placement(tiny_model_dir, tmp_path, case):
    stage, placement, keys = CASES[case]
    stale = [o for o in placement if o.startswith("placement.max_staleness")]
    extra = [*EPISODES, *STAGE_EXTRA[stage], *stale]
    local = run(tiny_model_dir, tmp_path / "local", stage, 3, extra)
    assert any(line["env/turns"] > 1 for line in local), "scenario: multi-turn episodes"
    placed = run(tiny_model_dir, tmp_path / case, stage, 3, [*extra, *placement])
    for step, (a, b) in enumerate(zip(local, placed, strict=True), start=1):
        for key in EXACT:
            assert a[key] == b[key], f"step {step} {key}: {b[key]} vs {a[key]}"
        assert a.get("pipeline/staleness") == b.get("pipeline/staleness")
    assert_same_trajectory(local, placed, keys)
    assert_same_weights(tmp_path / "local" / "policy", tmp_path / case / "policy")
