"""Episodes on the vLLM engine under Flatten and Separate (issue 24 item 3): the same seed
gives the same episodes (turns, tokens by source, rewards) and the same training as the local
runtime with the same engine. The controller draws each episode's sampling seeds, so an engine
on a Ray worker sampling a shard of the episodes samples the tokens the local engine samples."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm")
ray = pytest.importorskip("ray")

from placerl.config import load_config  # noqa: E402
from placerl.config.schema import RunConfig  # noqa: E402
from placerl.models.factory import make_model_dir  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402
from placerl.trainer import train  # noqa: E402
from tests.conftest import fast_overrides  # noqa: E402
from tests.engine.test_vllm_episodes_on_cpu import SIZE, STOPS  # noqa: E402

pytestmark = pytest.mark.slow
STEPS = 2
EPISODES = [
    "rollout.engine=vllm",
    "rollout.max_new_tokens=8",
    f"rollout.stop_strings={json.dumps(list(STOPS))}",
    "env.factory=tests.episodes.envs:echo_env",
    "env.max_tokens=64",
    "grpo.skip_uninformative=false",
    "grpo.kl_coef=0.05",
    "trainer.save_every=0",
    "data.num_eval=0",
]
TWO_WORKERS = ["placement.num_workers=2", "placement.threads_per_worker=1"]
EXACT = ["env/turns", "env/tokens_model", "env/tokens_observation", "env/reward", "reward/mean"]
CLOSE = ["loss/policy", "loss/kl", "actor/grad_norm"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("vllm") / "m", builtin_corpus(), SIZE, seed=0)


def _run(model_dir, run_dir, extra=()) -> list[dict]:
    overrides = [*fast_overrides(model_dir, run_dir, "grpo", STEPS), *EPISODES, *extra]
    train(load_config(None, overrides, RunConfig))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return [r for r in rows if r.get("step", 0) >= 1 and "env/turns" in r]


@pytest.fixture(scope="module")
def local(model_dir, tmp_path_factory):
    rows = _run(model_dir, tmp_path_factory.mktemp("local"))
    assert len(rows) == STEPS and any(r["env/turns"] > 1 for r in rows), "multi-turn"
    return rows


@pytest.mark.parametrize("strategy", [pytest.param("flatten", marks=pytest.mark.sweep), "separate"])
def test_vllm_episodes_are_the_same_under_flatten_and_separate(
    model_dir, local, tmp_path, strategy
):
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        placed = _run(
            model_dir, tmp_path / strategy, [f"placement.strategy={strategy}", *TWO_WORKERS]
        )
    finally:
        ray.shutdown()
    assert len(placed) == STEPS
    for step, (a, b) in enumerate(zip(local, placed, strict=True), start=1):
        for key in EXACT:
            assert b[key] == a[key], f"step {step} {key}: {b[key]} vs {a[key]}"
        for key in CLOSE:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (step, key)
        assert b["actor/is_log_ratio_abs_mean"] < 1e-4
