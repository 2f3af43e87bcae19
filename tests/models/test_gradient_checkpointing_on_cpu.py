"""Gradient checkpointing changes memory, not numbers: log-probs and gradients equal the plain
pass. The shared-prompt forward cannot run under it (checkpointed HF layers drop the KV cache in
training mode), so it is switched off with a printed note — and without that switch the result
would be silently wrong, which the last test shows."""

from __future__ import annotations

import copy

import torch

from placerl.models.lm_head import drops_kv_cache, enable_gradient_checkpointing, split_lm
from placerl.models.shared_prefix import shared_prefix_hidden, shared_prefix_plan
from placerl.roles.common import response_hidden, response_log_probs
from placerl.types import Field
from tests.synthetic import rollout_batch, tiny_lm


def _log_probs_and_grads(model, batch):
    model.train()
    log_probs, entropy = response_log_probs(
        model, batch, 0.9, with_entropy=True, entropy_grad=True, share_prefix=True
    )
    mask = batch[Field.RESPONSE_MASK].bool()
    loss = (log_probs + 0.1 * entropy)[mask].sum()
    params = [p for p in model.parameters() if p.requires_grad]
    return log_probs[mask].detach(), torch.autograd.grad(loss, params)


def test_checkpointed_training_forward_equals_the_plain_pass(capsys):
    plain = tiny_lm(seed=4, arch="qwen2", tied=True)
    checkpointed = enable_gradient_checkpointing(copy.deepcopy(plain))
    batch = rollout_batch(groups=3, group_size=3, seed=6)  # prompts repeat: sharing would pay
    assert shared_prefix_plan(batch) is not None

    expected, expected_grads = _log_probs_and_grads(plain, batch)
    got, grads = _log_probs_and_grads(checkpointed, batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(expected_grads, grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    assert "gradient checkpointing is on" in capsys.readouterr().err


def test_without_gradients_the_checkpointed_model_still_shares_the_prompt():
    model = enable_gradient_checkpointing(tiny_lm(seed=4)).train()
    assert drops_kv_cache(model)
    with torch.no_grad():
        assert not drops_kv_cache(model)
    assert not drops_kv_cache(model.eval())


def test_shared_prefix_under_checkpointing_would_be_wrong_without_the_switch():
    model = enable_gradient_checkpointing(tiny_lm(seed=4)).train()
    batch = rollout_batch(groups=3, group_size=3, seed=6)
    decoder, _ = split_lm(model)
    with torch.no_grad():  # (gradients on, only the cache matters here)
        right = response_hidden(decoder, batch, share_prefix=False)
    wrong = shared_prefix_hidden(decoder, batch, *shared_prefix_plan(batch)).detach()
    assert float((wrong - right).abs().max()) > 1e-2
