"""Online DPO, RSO and BRAIn run through the one experience pipeline under every placement:
at staleness 0 they train the same in one process (local) and on two Ray workers (Flatten,
Separate) — same losses within the invariant tests' tolerances (tests/runtime/
test_invariants_on_cpu.py says why not bitwise) — and a lagging or frozen rollout on Flatten
workers tags and bounds each batch's staleness.

RSO and BRAIn with ``proposal: sft`` sample from the frozen initial policy: on Flatten and
Separate every rollout worker holds a copy of its own that is never synced; online DPO and
BRAIn with ``proposal: policy`` sync a copy under Separate and sample with the actor's own
module under Flatten.
"""

from __future__ import annotations

import json

import pytest

from tests.runtime.test_invariants_on_cpu import (
    TWO_WORKERS,
    assert_same_trajectory,
    assert_same_weights,
    reward_model_dir,  # noqa: F401 (a fixture: a tiny reward model for Interleave)
    run,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

LENGTH = "reward.function=tests.conftest:length_reward"
CASES = {  # stage: (overrides, compared metrics)
    "online_dpo": (
        [LENGTH, "rollout.samples_per_prompt=4", "online_dpo.pairs_per_prompt=2"],
        ["loss/preference", "preference/margin", "actor/grad_norm", "pairs/count"],
    ),
    "rso": (
        [LENGTH, "rso.num_candidates=4", "rso.num_accepted=2"],
        ["loss/preference", "rso/accepted_reward", "actor/grad_norm", "pairs/count"],
    ),
    "brain": (
        [LENGTH, "brain.num_samples=4", "brain.proposal=policy"],
        ["loss/brain", "brain/target_ess_share", "actor/grad_norm", "kl/mean"],
    ),
}
PLACEMENTS = {
    "flatten": ["placement.strategy=flatten", *TWO_WORKERS],
    "separate": ["placement.strategy=separate", *TWO_WORKERS],
}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_runs(tiny_model_dir, tmp_path_factory):
    """Each stage once in one process: the trajectory every placement must follow."""
    out = {}
    for stage, (extra, _) in CASES.items():
        run_dir = tmp_path_factory.mktemp(stage) / "local"
        out[stage] = run_dir, run(tiny_model_dir, run_dir, stage, 2, extra)
    return out


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
@pytest.mark.parametrize("stage", sorted(CASES))
def test_staleness_zero_trains_like_one_process(
    tiny_model_dir, tmp_path, local_runs, stage, placement
):
    extra, keys = CASES[stage]
    local_dir, local = local_runs[stage]
    placed = run(tiny_model_dir, tmp_path / placement, stage, 2, [*extra, *PLACEMENTS[placement]])
    # RSO samples from the frozen initial policy: its batches lag by their step, by design
    assert [row["pipeline/staleness"] for row in placed] == ([0, 1] if stage == "rso" else [0, 0])
    assert_same_trajectory(local, placed, [*keys, "reward/mean"])
    assert_same_weights(local_dir / "policy", tmp_path / placement / "policy")


@pytest.mark.parametrize(
    "stage,extra,staleness",
    [
        ("online_dpo", ["placement.max_staleness=1"], [0, 1, 1]),
        ("rso", [], [0, 1, 2]),  # the frozen initial policy: never synced
        ("brain", ["brain.proposal=sft", "placement.max_staleness=3"], [0, 1, 2]),
    ],
)
def test_a_lagging_or_frozen_rollout_on_flatten_workers(
    tiny_model_dir, tmp_path, stage, extra, staleness
):
    """Flatten samples with copies of the policy of each worker's own when the rollout may
    lag; each batch is tagged with its staleness, within the bound (or frozen)."""
    overrides = [*CASES[stage][0], *extra, *PLACEMENTS["flatten"]]
    rows = run(tiny_model_dir, tmp_path / "run", stage, 3, overrides)
    assert [row["pipeline/staleness"] for row in rows] == staleness


@pytest.mark.parametrize(  # one stage in CI; the other two with PLACERL_SWEEP=1 (same path)
    "stage",
    [s if s == "online_dpo" else pytest.param(s, marks=pytest.mark.sweep) for s in sorted(CASES)],
)
def test_interleave_splits_reference_and_reward_model_and_trains_like_one_process(
    tiny_model_dir,
    reward_model_dir,  # noqa: F811 (the fixture imported above)
    tmp_path,
    stage,
):
    """With a reward model beside the reference there are two frozen models to split:
    Interleave puts them on disjoint workers, the policy on both, and trains as one process."""
    extra, keys = CASES[stage]
    extra = [f"reward.model={reward_model_dir}" if x == LENGTH else x for x in extra]
    local = run(tiny_model_dir, tmp_path / "local", stage, 2, extra)
    interleave = [*extra, "placement.strategy=interleave", *TWO_WORKERS]
    placed = run(tiny_model_dir, tmp_path / "interleave", stage, 2, interleave)
    workers = json.loads((tmp_path / "interleave" / "workers.json").read_text())
    roles = {w["worker"]: set(w["roles"]) for w in workers}
    assert roles["g0/w0"] >= {"actor", "reference"} and "reward" not in roles["g0/w0"]
    assert roles["g1/w1"] >= {"actor", "reward"} and "reference" not in roles["g1/w1"]
    assert_same_trajectory(local, placed, [*keys, "reward/mean"])
    assert_same_weights(tmp_path / "local" / "policy", tmp_path / "interleave" / "policy")
