"""``rollout.engine: vllm`` under Separate on Ray: the engine on the generation worker gets
the trainer's weights over the sync group (into an HF copy, then in place into the engine),
and at ``max_staleness: 0`` training equals the local runtime's with the same engine."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")
ray = pytest.importorskip("ray")

from placerl.config import load_config  # noqa: E402
from placerl.config.schema import RunConfig  # noqa: E402
from placerl.models.factory import make_model_dir  # noqa: E402
from placerl.stages.online import OnlineStage  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402
from placerl.timing import PhaseTimer  # noqa: E402
from placerl.trainer import seed_everything  # noqa: E402
from tests.conftest import fast_overrides  # noqa: E402
from tests.engine.test_vllm_training_on_cpu import SIZE  # noqa: E402

STEPS = 3
ENGINE = [
    "rollout.engine=vllm",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=8",
    "reward.function=tests.conftest:length_reward",
    "grpo.kl_coef=0.05",
    "trainer.save_every=0",
    "data.num_eval=0",
]
COMPARED = ["loss/policy", "loss/kl", "actor/grad_norm", "reward/mean"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("m") / "m", builtin_corpus(), SIZE, seed=0)


def _run(model_dir, run_dir, extra=()):
    overrides = [*fast_overrides(model_dir, run_dir, "grpo", STEPS), *ENGINE, *extra]
    cfg = load_config(None, overrides, RunConfig)
    seed_everything(cfg.seed)
    stage = OnlineStage(cfg)
    timer, metrics = PhaseTimer(), []
    try:
        for step in range(STEPS):
            metrics.append(stage.step(step, timer))
            timer.pop()
    finally:
        stage.close()
    return metrics


def test_separate_with_the_engine_trains_like_the_local_engine(model_dir, tmp_path):
    local = _run(model_dir, tmp_path / "local")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        separate = _run(
            model_dir,
            tmp_path / "separate",
            [
                "placement.strategy=separate",
                "placement.num_workers=2",
                "placement.threads_per_worker=1",
            ],
        )
    finally:
        ray.shutdown()
    for step, (a, b) in enumerate(zip(local, separate)):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (step, key)
        assert b["actor/is_log_ratio_abs_mean"] < 1e-4
    assert separate[1]["sync/mb"] > 0


def test_flatten_colocates_an_engine_with_each_trainer_worker(model_dir, tmp_path):
    """Each worker's engine takes its actor's weights after every update (a copy in the
    worker, no network), so the engine's μ stays the trainer's π."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        flatten = _run(
            model_dir,
            tmp_path / "flatten",
            [
                "placement.strategy=flatten",
                "placement.num_workers=2",
                "placement.threads_per_worker=1",
            ],
        )
    finally:
        ray.shutdown()
    for r in flatten:
        assert r["actor/is_log_ratio_abs_max"] < 1e-3
    assert flatten[-1]["reward/mean"] > 0


def test_separate_with_the_engine_runs_one_step_ahead(model_dir, tmp_path):
    """max_staleness 1: the generation worker's engine samples batch k+1 while the trainer
    learns on batch k; stale samples are tagged and corrected like placerl's sampler's."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        ahead = _run(
            model_dir,
            tmp_path / "ahead",
            [
                "placement.strategy=separate",
                "placement.num_workers=2",
                "placement.threads_per_worker=1",
                "placement.max_staleness=1",
            ],
        )
    finally:
        ray.shutdown()
    assert [r["pipeline/staleness"] for r in ahead] == [0.0, 1.0, 1.0]
    assert all("actor/is_weight_mean" in r for r in ahead)
    assert ahead[1]["actor/is_log_ratio_abs_mean"] > 0  # μ is one update behind π_old
