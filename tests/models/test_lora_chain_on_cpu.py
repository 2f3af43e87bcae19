"""A chain of LoRA stages (SFT → DPO, SFT → GRPO, SFT → DPO → GRPO) exports adapters that the
ecosystem's plain recipe loads: ``PeftModel.from_pretrained(AutoModelForCausalLM
.from_pretrained(base), adapter_dir)`` with ``base`` the adapter's recorded
``base_model_name_or_path``, the same model as placerl's own loading (issue 21, point 1)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.models.loading import load_policy
from placerl.trainer import train
from tests.conftest import fast_overrides

IDS = torch.tensor([[5, 9, 12, 7, 3, 22, 14, 8]])


def _stage(model_dir, run_dir, stage, *extra):
    overrides = [*fast_overrides(model_dir, run_dir, stage, 3), "model.lora.r=4", *extra]
    if stage == "grpo":
        overrides.append("reward.function=tests.conftest:length_reward")
    train(load_config(None, overrides, RunConfig))
    return run_dir / "policy"


def _plain_recipe(adapter_dir):
    """What a user without placerl does: the recorded base, then the adapter on it."""
    base = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = base["base_model_name_or_path"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*multiple adapters.*")  # the old bug
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir)


def _logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.fixture(scope="module")
def chain(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    sft = _stage(tiny_model_dir, root / "sft", "sft", "optim.lr=1e-2")
    return {
        "sft": sft,
        "dpo": _stage(sft, root / "dpo", "dpo", "optim.lr=1e-2"),
        "grpo": _stage(sft, root / "grpo", "grpo", "optim.lr=1e-2"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["dpo", "grpo"])
def test_a_chained_lora_export_loads_with_transformers_and_peft_alone(chain, stage, tiny_model_dir):
    adapter_dir = chain[stage]
    ours = _logits(load_policy(adapter_dir))
    assert (ours - _logits(load_policy(chain["sft"]))).abs().max() > 1e-4, "scenario: trained"
    assert (ours - _logits(load_policy(tiny_model_dir))).abs().max() > 1e-3, "scenario: chain"
    theirs = _logits(_plain_recipe(adapter_dir))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # transformers' own peft integration reads the adapter directory directly
    direct = _logits(AutoModelForCausalLM.from_pretrained(adapter_dir))
    torch.testing.assert_close(direct, ours, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_a_chain_of_three_still_loads_with_the_plain_recipe(chain, tmp_path):
    """SFT → DPO → GRPO: the GRPO adapter's base holds SFT's and DPO's adapters merged."""
    adapter_dir = _stage(chain["dpo"], tmp_path / "grpo", "grpo", "optim.lr=1e-2")
    ours = _logits(load_policy(adapter_dir))
    torch.testing.assert_close(_logits(_plain_recipe(adapter_dir)), ours, atol=1e-5, rtol=0)
