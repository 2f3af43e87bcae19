"""Computing a group's shared prompt once gives the plain pass's logits and gradients."""

from __future__ import annotations

import torch

from placerl.data.collate import left_pad
from placerl.models.loading import load_policy, load_tokenizer
from placerl.models.shared_prefix import prefix_saving, shared_prefix_logits, shared_prefix_plan
from placerl.roles.common import response_logits
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams


def _group_batch(model_dir, group=3):
    tok = load_tokenizer(model_dir)
    policy = load_policy(model_dir)
    prompts = ["rev 1234567=", "rev 9=", "rev 55123="]
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id)
    ids, mask = ids.repeat_interleave(group, 0), mask.repeat_interleave(group, 0)
    rollout = RolloutWorker(policy, tok, SamplingParams(max_new_tokens=5), seed=2)
    return policy, rollout.generate(ids, mask)


def test_plan_finds_each_distinct_prompt_once(tiny_model_dir):
    _, batch = _group_batch(tiny_model_dir)
    first, inverse = shared_prefix_plan(batch)
    assert sorted(first.tolist()) == [0, 3, 6]
    assert torch.equal(first[inverse], torch.tensor([0, 0, 0, 3, 3, 3, 6, 6, 6]))
    assert 0 < prefix_saving(batch, first) < 1
    assert shared_prefix_plan(batch[[0, 3, 6]]) is None  # nothing repeats: nothing to share


def test_shared_prefix_matches_the_plain_pass_in_value_and_gradient(tiny_model_dir):
    policy, batch = _group_batch(tiny_model_dir)
    policy.train()
    plain = response_logits(policy, batch, share_prefix=False)
    shared = shared_prefix_logits(policy, batch, *shared_prefix_plan(batch))
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    params = [p for p in policy.parameters() if p.requires_grad]
    g_plain = torch.autograd.grad(plain.logsumexp(-1).sum(), params)
    g_shared = torch.autograd.grad(shared.logsumexp(-1).sum(), params)
    for a, b in zip(g_plain, g_shared):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_response_logits_shares_the_prefix_of_groups(tiny_model_dir, monkeypatch):
    import placerl.roles.common as common

    policy, batch = _group_batch(tiny_model_dir)
    calls = []
    real = common.shared_prefix_logits
    monkeypatch.setattr(common, "shared_prefix_logits", lambda *a: calls.append(1) or real(*a))
    response_logits(policy, batch)
    assert calls, "a batch of 3 groups of 3 shares its prompts"
