"""The held-out KL to the reference is zero for the reference itself and grows as π moves."""

from __future__ import annotations

import copy

import torch

from placerl.config.schema import RunConfig
from placerl.evaluation import kl_to_reference
from placerl.models.loading import load_policy, load_tokenizer
from placerl.stages.sources import prompt_set


def test_kl_is_zero_against_itself_and_positive_after_a_change(tiny_model_dir):
    tok, policy = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    cfg = RunConfig(stage="sft", data={"num_eval": 64})
    prompts = prompt_set(cfg, tok, None, "eval")
    same = kl_to_reference(policy, copy.deepcopy(policy), tok, prompts, max_new_tokens=4)
    assert abs(same) < 1e-5
    moved = copy.deepcopy(policy)
    torch.manual_seed(0)  # the perturbation must not depend on which tests ran before
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert kl_to_reference(moved, policy, tok, prompts, max_new_tokens=4) > 0.01
