"""Every stage trains the same with micro-batches and gradient checkpointing as without them:
the same losses step by step (the gradients agree to fp32 rounding; tests/roles/
test_micro_batches_on_cpu.py checks them to 1e-6)."""

from __future__ import annotations

import json

import pytest

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.trainer import train
from tests.conftest import fast_overrides

LENGTH_REWARD = "reward.function=tests.conftest:length_reward"
MEMORY = ("trainer.micro_batch_size=1", "model.gradient_checkpointing=true")


def _losses(model_dir, run_dir, stage, extra):
    overrides = [*fast_overrides(model_dir, run_dir, stage, 2), "trainer.save_every=0", *extra]
    train(load_config(None, overrides, RunConfig))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith("loss/")} for r in rows if "step" in r]


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage,extra",
    [
        ("sft", ()),
        ("rm", ()),
        ("grpo", ("grpo.kl_coef=0.05", "grpo.skip_uninformative=false", LENGTH_REWARD)),
        ("ppo", ("ppo.minibatches=2", "ppo.entropy_coef=0.01")),
        ("dpo", ()),
        ("online_dpo", ("rollout.samples_per_prompt=2", LENGTH_REWARD)),
        ("brain", (LENGTH_REWARD,)),
    ],
)
def test_stage_losses_do_not_depend_on_micro_batches(tiny_model_dir, tmp_path, stage, extra):
    plain = _losses(tiny_model_dir, tmp_path / "plain", stage, extra)
    micro = _losses(tiny_model_dir, tmp_path / "micro", stage, (*extra, *MEMORY))
    assert plain and any(plain), "scenario: losses were logged"
    assert len(micro) == len(plain)
    for a, b in zip(plain, micro, strict=True):
        assert b.keys() == a.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
