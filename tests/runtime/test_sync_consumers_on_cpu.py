"""What an engine receives from a LoRA trainer: the merged policy under the base model's own
names (W + ΔW per layer), without changing the trained model."""

from __future__ import annotations

import copy

import torch

from placerl.config.lora import LoraConfig
from placerl.models.loading import load_policy
from placerl.models.lora import with_lora
from placerl.runtime.sync.consumers import engine_weights


def test_engine_weights_of_a_lora_model_are_the_merged_model(tiny_model_dir):
    model = with_lora(load_policy(tiny_model_dir), LoraConfig(r=4))
    with torch.no_grad():  # adapters that change something (B starts at zero)
        for name, tensor in model.named_parameters():
            if "lora_B" in name:
                tensor.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sent = dict(engine_weights(model))
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert sent.keys() == merged.keys()
    for key, tensor in merged.items():
        torch.testing.assert_close(sent[key], tensor, rtol=0, atol=1e-6, msg=key)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "unchanged"
