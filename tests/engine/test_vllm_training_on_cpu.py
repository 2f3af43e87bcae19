"""GRPO with ``rollout.engine: vllm`` in the local runtime: the engine gets the trainer's
weights after every update (in place), the trainer recomputes π_old, and the mismatch between
the engine's μ and π_old is measured every step (fp32: rounding only)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm")

from placerl.config import load_config  # noqa: E402
from placerl.config.schema import RunConfig  # noqa: E402
from placerl.models.factory import TinyLlamaSize, make_model_dir  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402
from placerl.trainer import train  # noqa: E402
from tests.conftest import fast_overrides  # noqa: E402

SIZE = TinyLlamaSize(  # vLLM's CPU attention wants head_dim >= 32
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    max_position_embeddings=128,
)


def test_grpo_on_the_vllm_engine_trains_and_reports_the_mismatch(tmp_path):
    model = make_model_dir(tmp_path / "m", builtin_corpus(), SIZE, seed=0)
    overrides = fast_overrides(model, tmp_path / "run", "grpo", steps=3) + [
        "rollout.engine=vllm",
        "rollout.samples_per_prompt=4",
        "rollout.max_new_tokens=8",
        "grpo.skip_uninformative=false",
        "reward.function=tests.conftest:length_reward",
        "trainer.save_every=0",
    ]
    cfg = load_config(None, overrides, RunConfig)
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [r for r in rows if r.get("step", 0) >= 1 and "actor/is_weight_mean" in r]
    assert len(steps) == 3
    for r in steps:
        assert r["actor/is_log_ratio_abs_mean"] < 1e-4  # fp32 engine vs fp32 trainer
        assert r["actor/is_log_ratio_abs_max"] < 1e-3
        assert r["actor/is_trunc_frac"] == 0.0
        assert abs(r["actor/is_weight_mean"] - 1) < 1e-3
    assert steps[1]["sync/mb"] > 0  # weights went into the engine after the first update


def test_with_lora_the_engine_serves_the_merged_policy(tmp_path):
    """The engine has no adapters: the trainer's LoRA weights are merged into full tensors
    for it, so after each update its μ is still the trainer's π (fp32 rounding only)."""
    model = make_model_dir(tmp_path / "m", builtin_corpus(), SIZE, seed=0)
    overrides = fast_overrides(model, tmp_path / "run", "grpo", steps=3) + [
        "rollout.engine=vllm",
        "rollout.samples_per_prompt=4",
        "rollout.max_new_tokens=8",
        "grpo.skip_uninformative=false",
        "reward.function=tests.conftest:length_reward",
        "trainer.save_every=0",
        "model.lora.r=4",
        "optim.lr=5e-2",  # adapters start at B = 0: a large step so they matter at once
    ]
    train(load_config(None, overrides, RunConfig))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [r for r in rows if "actor/is_weight_mean" in r]
    assert len(steps) == 3 and steps[1]["sync/mb"] > 0
    for r in steps:
        assert r["actor/is_log_ratio_abs_max"] < 1e-3, r
