"""GSPO, DAPO (and CISPO, REINFORCE++-baseline) train the same in one process and on two Ray
workers under Flatten, Separate and Interleave, at staleness 0: same losses, ratios and
weights within the invariant tests' tolerances (tests/runtime/test_invariants_on_cpu.py says
why not bitwise). Nothing in their code knows the placement: GSPO's sequence ratio and DAPO's
token-mean loss are global over the workers' rows, and DAPO's extra sampling rounds run in the
pipeline on whatever rollout the runtime built, so the same prompts are drawn and the same
groups kept everywhere.
"""

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

LENGTH = "reward.function=tests.conftest:length_reward"
PG_KEYS = ["loss/policy", "actor/grad_norm", "actor/ratio_mean", "reward/mean"]
CASES = {  # name: (stage, overrides, compared metrics)
    "gspo": (
        "grpo",
        [LENGTH, "grpo.policy_loss=gspo", "grpo.minibatches=2"],  # 2: the clip acts
        # not actor/ratio_mean: GSPO reports it as a mean over sequences, which the runtime
        # merges across micro-batches and workers by token share (a reporting aggregate only:
        # the loss, its gradient and the weights match)
        [k for k in PG_KEYS if k != "actor/ratio_mean"],
    ),
    "dapo": (
        "dapo",
        [
            LENGTH,
            "rollout.samples_per_prompt=2",
            "grpo.minibatches=2",
            "dapo.dynamic_sampling.max_rounds=3",
            "dapo.overlong.cache_length=3",
        ],
        [
            *PG_KEYS,
            "dynamic_sampling/rounds",
            "dynamic_sampling/filtered_share",
            "reward/overlong_penalty",
        ],
    ),
    "cispo": (
        "grpo",
        [LENGTH, "grpo.policy_loss=cispo", "grpo.minibatches=2"],
        # not actor/ratio_mean: with groups of equal rewards skipped, a worker reports it over
        # its kept rows only (as GRPO's skip-zero-advantages invariant test leaves it out)
        [k for k in PG_KEYS if k != "actor/ratio_mean"],
    ),
    "reinforce_pp_baseline": (
        "reinforce_pp_baseline",
        [LENGTH, "rollout.samples_per_prompt=2", "grpo.minibatches=2"],
        PG_KEYS,
    ),
}
PLACEMENTS = {
    "flatten": ["placement.strategy=flatten", *TWO_WORKERS],
    "separate": ["placement.strategy=separate", *TWO_WORKERS],
    "interleave": ["placement.strategy=interleave", *TWO_WORKERS],
}
# every placement for the two the issue names first; Flatten for the others
GRID = [(name, p) for name in ("gspo", "dapo") for p in sorted(PLACEMENTS)]
GRID += [("cispo", "flatten"), ("reinforce_pp_baseline", "flatten")]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_runs(tiny_model_dir, tmp_path_factory):
    """Each case once in one process (lazily): the trajectory every placement must follow."""
    out: dict = {}

    def get(name):
        if name not in out:
            stage, extra, _ = CASES[name]
            run_dir = tmp_path_factory.mktemp(name) / "local"
            out[name] = run_dir, run(tiny_model_dir, run_dir, stage, 2, extra)
        return out[name]

    return get


@pytest.mark.parametrize("name,placement", GRID)
def test_staleness_zero_trains_like_one_process(
    tiny_model_dir, tmp_path, local_runs, name, placement
):
    stage, extra, keys = CASES[name]
    local_dir, local = local_runs(name)
    if name == "dapo":  # scenario: the filter threw groups away, so rounds were sampled
        assert any(row["dynamic_sampling/filtered_share"] > 0 for row in local)
    placed = run(tiny_model_dir, tmp_path / placement, stage, 2, [*extra, *PLACEMENTS[placement]])
    assert [row["pipeline/staleness"] for row in placed] == [0, 0]
    assert_same_trajectory(local, placed, keys)
    assert_same_weights(local_dir / "policy", tmp_path / placement / "policy")
