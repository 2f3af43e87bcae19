"""Log-probs through the LM head in chunks equal the plain (B, T, V)-logits path, in value and
gradient (fp32, 1e-5), with temperature, entropy (and its gradient), tied embeddings, and the
shared-prompt forward; and no (·, V) tensor larger than a chunk is kept for backward."""

from __future__ import annotations

import pytest
import torch

from placerl.models.lm_head import split_lm
from placerl.models.logprobs import entropy_from_logits, log_probs_from_logits, token_log_probs
from placerl.roles.common import response_log_probs, response_logits
from placerl.types import Field
from tests.synthetic import rollout_batch, tiny_lm

TOL = dict(atol=1e-5, rtol=1e-5)


def _grads(out, inputs):
    return torch.autograd.grad(out, inputs, allow_unused=False)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_head_matches_full_logits_with_entropy_gradient(temperature, bias):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(11, 8, generator=g, requires_grad=True)
    weight = torch.randn(37, 8, generator=g, requires_grad=True)
    b = torch.randn(37, generator=g, requires_grad=True) if bias else None
    labels = torch.randint(0, 37, (11,), generator=g)
    coef_lp, coef_ent = torch.randn(11, generator=g), torch.randn(11, generator=g)
    inputs = [hidden, weight] + ([b] if bias else [])

    logits = torch.nn.functional.linear(hidden, weight, b) / temperature
    plain_lp, plain_ent = log_probs_from_logits(logits, labels), entropy_from_logits(logits)
    plain = _grads((coef_lp * plain_lp).sum() + (coef_ent * plain_ent).sum(), inputs)

    lp, ent = token_log_probs(
        hidden, weight, b, labels, temperature, with_entropy=True, entropy_grad=True, chunk=4
    )
    torch.testing.assert_close(lp, plain_lp, **TOL)
    torch.testing.assert_close(ent, plain_ent, **TOL)
    chunked = _grads((coef_lp * lp).sum() + (coef_ent * ent).sum(), inputs)
    for a, c in zip(plain, chunked, strict=True):
        torch.testing.assert_close(c, a, **TOL)


def test_entropy_without_its_gradient_is_data():
    hidden = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(9, 4, requires_grad=True)
    lp, ent = token_log_probs(hidden, weight, None, torch.zeros(5, dtype=torch.long), 1.0, True)
    assert not ent.requires_grad and lp.requires_grad


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("share_prefix", [False, True])
def test_response_log_probs_match_the_plain_logits_path(tied, share_prefix):
    model = tiny_lm(seed=1, tied=tied).train()
    assert split_lm(model) is not None
    batch = rollout_batch(groups=3, group_size=3, seed=2)
    params = [p for p in model.parameters() if p.requires_grad]
    mask = batch[Field.RESPONSE_MASK].bool()

    logits = response_logits(model, batch, temperature=0.8, share_prefix=False)
    plain_lp = log_probs_from_logits(logits, batch[Field.RESPONSE_IDS])
    plain_ent = entropy_from_logits(logits)
    plain = _grads((plain_lp - 0.1 * plain_ent)[mask].sum(), params)

    lp, ent = response_log_probs(
        model, batch, 0.8, with_entropy=True, entropy_grad=True, share_prefix=share_prefix
    )
    torch.testing.assert_close(lp[mask], plain_lp[mask], **TOL)
    torch.testing.assert_close(ent[mask], plain_ent[mask], **TOL)
    chunked = _grads((lp - 0.1 * ent)[mask].sum(), params)
    for a, c in zip(plain, chunked, strict=True):
        torch.testing.assert_close(c, a, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_runs_the_head_in_bf16_forward_and_backward():
    model = tiny_lm(seed=3)
    batch = rollout_batch(seed=4)
    mask = batch[Field.RESPONSE_MASK].bool()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, _ = response_log_probs(model, batch, share_prefix=False)
        ref = log_probs_from_logits(
            response_logits(model, batch, share_prefix=False), batch[Field.RESPONSE_IDS]
        )
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp[mask], ref[mask], atol=0.05, rtol=0.02)
    lp[mask].sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_backward_keeps_no_full_vocabulary_tensor():
    """The saved tensors of the chunked path are its inputs, not (N, V) logits."""
    hidden = torch.randn(64, 8, requires_grad=True)
    weight = torch.randn(1000, 8, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_log_probs(hidden, weight, None, torch.zeros(64, dtype=torch.long), chunk=16)
    assert saved and all(1000 not in shape or shape == (1000, 8) for shape in saved), saved
