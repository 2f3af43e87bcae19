"""Exact resume with LoRA: checkpoints hold the adapters (peft directories); a run stopped
after step 2 and resumed to 4 ends with bitwise the adapters of a straight run to 4."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.trainer import train
from tests.conftest import fast_overrides

LORA = "model.lora.r=4"
LENGTH_REWARD = "reward.function=tests.conftest:length_reward"


def _adapter(directory):
    assert not (directory / "config.json").exists(), "a LoRA model exports its adapter alone"
    return load_file(directory / "adapter_model.safetensors")


def _run(model_dir, run_dir, stage, steps, resume=False, extra=()):
    overrides = [*fast_overrides(model_dir, run_dir, stage, steps), LORA, *extra]
    return train(load_config(None, overrides, RunConfig), resume=resume)


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage,extra",
    [
        ("sft", ()),
        ("rm", ()),
        ("grpo", ("grpo.kl_coef=0.05", LENGTH_REWARD)),  # reference = base, adapter disabled
        ("ppo", ("ppo.minibatches=2",)),  # a LoRA critic with a fully trained value head
        # a stale local rollout copy whose (adapter) weights go into the checkpoint
        ("ppo", ("placement.max_staleness=2", "staleness.sync_every=2")),
        ("dpo", ("preference.reference=online",)),
        ("online_dpo", ("rollout.samples_per_prompt=2", LENGTH_REWARD)),
        ("rso", (LENGTH_REWARD,)),  # the frozen sampler is the base (adapter disabled)
        # the policy snapshot that samples is a LoRA copy synced by its adapters
        ("brain", (LENGTH_REWARD, "brain.proposal=policy", "placement.max_staleness=1")),
    ],
)
def test_lora_resume_is_bitwise_equal_to_straight_run(tiny_model_dir, tmp_path, stage, extra):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    _run(tiny_model_dir, straight, stage, 4, extra=extra)
    _run(tiny_model_dir, stopped, stage, 2, extra=extra)
    assert (stopped / "checkpoints" / "step_000002").exists()
    _run(tiny_model_dir, stopped, stage, 4, resume=True, extra=extra)

    names = {"rm": ["reward_model"], "ppo": ["policy", "critic"]}.get(stage, ["policy"])
    for name in names:
        a, b = _adapter(straight / name), _adapter(stopped / name)
        assert a.keys() == b.keys() and a
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
        lora_b = [k for k in a if "lora_B" in k]
        assert any(a[k].abs().sum() > 0 for k in lora_b), "training moved the adapters"
