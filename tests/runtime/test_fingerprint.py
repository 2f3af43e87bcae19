"""The sync guard's fingerprint: its fast form equals the definition, and it sees every change.

The definition (``transport.fingerprint``'s docstring): per tensor, its bytes zero-padded to a
multiple of 8 as little-endian int64 words w_i, ``Σ w_i`` and ``Σ (i mod 65521 + 1)·w_i`` in
int64 arithmetic, folded into the digest in order. The code computes the sums through column
sums; these tests hold it to the definition on random tensors of every element size and of
sizes that are not whole words, across the 65521 period's boundaries.
"""

from __future__ import annotations

import random

import torch

from placerl.runtime.sync.transport import fingerprint

MASK = (1 << 63) - 1
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int8, torch.uint8)


def by_definition(tensors, seed: int = 0) -> int:
    """Python integers, element by element: no int64 wrap-around to get wrong."""
    digest = seed
    for tensor in tensors:
        raw = bytes(tensor.reshape(-1).view(torch.uint8).tolist())
        raw += bytes(-len(raw) % 8)
        words = [
            int.from_bytes(raw[i : i + 8], "little", signed=True) for i in range(0, len(raw), 8)
        ]
        plain = sum(words)
        weighted = sum((i % 65521 + 1) * w for i, w in enumerate(words))
        digest = (digest * 1_000_003 + plain * 65_537 + weighted) & MASK
    return digest


def random_tensor(rng: random.Random) -> torch.Tensor:
    n = rng.choice(
        [0, 1, 7, 65520 * 2, 65521 * 2, 65522 * 2, 4 * 65521 + 5, rng.randrange(1, 2**20)]
    )
    dtype = rng.choice(DTYPES)
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    if dtype.is_floating_point:
        return (torch.randn(n, generator=g, dtype=torch.float64) * 10 ** rng.randint(-3, 3)).to(
            dtype
        )
    return torch.randint(0, 256, (n,), generator=g, dtype=torch.int64).to(dtype)


def test_the_fast_fingerprint_equals_the_definition_on_random_tensors():
    rng = random.Random(0)
    for _ in range(12):
        tensors = [random_tensor(rng) for _ in range(rng.randint(1, 3))]
        seed = rng.randrange(2**40)
        assert fingerprint(tensors, seed) == by_definition(tensors, seed)


def test_a_tensor_at_an_odd_offset_has_the_fingerprint_of_its_copy():
    base = torch.randn(3 * 65521 + 3)
    view = base[1:]  # 4 bytes into its storage: not an int64 boundary
    assert fingerprint([view]) == fingerprint([view.clone()]) == by_definition([view])


def test_a_flipped_bit_or_swapped_elements_change_the_fingerprint():
    rng = random.Random(1)
    for _ in range(20):
        x = torch.randn(rng.randrange(2, 300_000))
        before = fingerprint([x])
        words = x.view(torch.int32)
        i, j = rng.randrange(x.numel()), rng.randrange(x.numel())
        flipped = x.clone()
        flipped.view(torch.int32)[i] = words[i] ^ (1 << rng.randrange(31))
        assert fingerprint([flipped]) != before
        if x[i] != x[j] and (i // 2 - j // 2) % 65521:
            swapped = x.clone()
            swapped[i], swapped[j] = x[j], x[i]
            assert fingerprint([swapped]) != before
