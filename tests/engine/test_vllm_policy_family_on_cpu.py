"""The policy-optimisation family of issue 23 — GSPO, CISPO, DAPO — with
``rollout.engine: vllm`` in the local runtime: each trains two steps with the engine's μ and
reports the engine/trainer mismatch (fp32: rounding only), GSPO through its sequence-level
IS weight, DAPO with its dynamic-sampling rounds drawn from the engine."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm")

from placerl.config import load_config  # noqa: E402
from placerl.config.schema import RunConfig  # noqa: E402
from placerl.models.factory import make_model_dir  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402
from placerl.trainer import train  # noqa: E402
from tests.conftest import fast_overrides  # noqa: E402
from tests.engine.test_vllm_training_on_cpu import SIZE  # noqa: E402

SWITCHES = {
    "gspo": ("grpo", ["grpo.policy_loss=gspo", "grpo.minibatches=2"]),
    "cispo": ("grpo", ["grpo.policy_loss=cispo", "grpo.minibatches=2"]),
    "dapo": ("dapo", ["dapo.dynamic_sampling.max_rounds=2", "dapo.overlong.cache_length=2"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_the_new_losses_train_on_the_vllm_engine(tmp_path, name):
    stage, switches = SWITCHES[name]
    model = make_model_dir(tmp_path / "m", builtin_corpus(), SIZE, seed=0)
    overrides = fast_overrides(model, tmp_path / "run", stage, steps=2) + [
        "rollout.engine=vllm",
        "rollout.samples_per_prompt=4",
        "rollout.max_new_tokens=8",
        "reward.function=tests.conftest:length_reward",
        "trainer.save_every=0",
        *switches,
    ]
    train(load_config(None, overrides, RunConfig))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [r for r in rows if "actor/is_weight_mean" in r]
    assert len(steps) == 2 and steps[1]["sync/mb"] > 0  # the engine took the update
    for r in steps:
        assert r["actor/is_log_ratio_abs_max"] < 1e-3, r  # fp32 engine vs fp32 trainer
        assert abs(r["actor/is_weight_mean"] - 1) < 1e-3, r
    if name == "dapo":
        for r in steps:
            assert 1 <= r["dynamic_sampling/rounds"] <= 2
            assert 0.0 <= r["dynamic_sampling/filtered_share"] <= 1.0
