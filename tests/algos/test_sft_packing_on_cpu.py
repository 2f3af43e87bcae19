"""Padding-free SFT (``data.packing: auto``): examples laid end to end in rows, positions
restarting per example, give the padded loss and gradient (up to summation order)."""

from __future__ import annotations

import random

import pytest
import torch

from placerl.algos import sft as sft_module
from placerl.config.schema import OptimConfig
from placerl.models.micro_batches import MicroBatching
from placerl.models.training import make_optimizer


def _algo(model_dir, layout, spec=None):
    from placerl.models.loading import load_policy, load_tokenizer

    tok, model = load_tokenizer(model_dir), load_policy(model_dir)
    optimizer, scheduler = make_optimizer(model.parameters(), OptimConfig(), 1)
    return sft_module.SFT(
        model,
        tok,
        optimizer,
        scheduler,
        max_len=48,
        grad_clip=1e9,
        precision="fp32",
        micro_batching=spec,
        layout=layout,
    )


def _pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    def digits(k):
        return "".join(rng.choice("0123456789") for _ in range(k))

    out = []
    for _ in range(n):
        x = digits(rng.choice([1, 2, 3, 12]))  # skewed: mostly short, some long
        out.append((f"rev {x}=", x[::-1]))
    return out


def test_the_tiny_llama_packs_its_sft_rows(tiny_model_dir):
    algo = _algo(tiny_model_dir, "padded")
    assert sft_module.choose_sft_layout(algo.model) == "packed"


@pytest.mark.parametrize("layout", ["packed", "shared"])
@pytest.mark.parametrize("spec", [None, MicroBatching(rows=3, tokens=60)])
def test_packed_loss_and_gradient_equal_the_padded_ones(tiny_model_dir, layout, spec):
    rng = random.Random(0)
    for trial in range(3):
        examples = None
        results = []
        for kind in ("padded", layout):
            algo = _algo(tiny_model_dir, kind, spec)
            examples = examples or algo.encode(_pairs(rng, 7))
            share = sft_module.in_order_share(sft_module.SFT_KIND, examples, algo.micro_batching)
            stats = algo.accumulate(share)
            grads = [p.grad.clone() for p in algo.model.parameters()]
            results.append((stats, grads))
        (padded, g_pad), (packed, g_pack) = results
        assert packed["loss/sft"] == pytest.approx(padded["loss/sft"], rel=1e-5), trial
        assert packed["_slots"] < padded["_slots"], "padding gone"
        for a, b in zip(g_pad, g_pack, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
