"""Token-balanced micro-batches vs the plain split, and padding-free SFT vs padding, side by side.

    python benchmarks/offline_balance.py                 # 2 ranks, batch 32, 6 timed batches
    python benchmarks/offline_balance.py --world 4 --batches 4

A length-skewed SFT set (digit reversals: most 2–8 digits, one in eight 60–120 digits) is dealt
to ``--world`` data-parallel ranks by ``plan_step`` (``algos/offline.py``) two ways:
``none`` (contiguous shares cut in order: what a plain split does) and ``tokens`` (workload
balanced over ranks and micro-batches, ``data/balance.py``). A synchronous data-parallel step
waits for its slowest rank, so the step time is the *largest* rank time; each rank's share is
run here, one after the other in this process, by the real forward/backward
(``SFT.accumulate``), and timed. The modes alternate batch by batch on one model; the median
over batches after one warm-up is printed with the ratio plain / balanced (> 1: balancing is
faster). Then the same balanced shares with the ``padded`` and the ``packed`` layout
(padding-free: examples end to end, positions restarting): tokens per second over all ranks.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from placerl.algos.offline import plan_step
from placerl.algos.sft import SFT, SFT_KIND
from placerl.config.schema import OptimConfig
from placerl.models.factory import TinyLlamaSize, build_tiny_llama, build_tokenizer
from placerl.models.micro_batches import MicroBatching
from placerl.models.training import make_optimizer
from placerl.stages.sources import builtin_corpus


def skewed_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        digits = rng.randint(60, 120) if rng.random() < 0.125 else rng.randint(2, 8)
        x = "".join(rng.choice("0123456789") for _ in range(digits))
        out.append((f"rev {x}=", x[::-1]))
    return out


def rank_times(algo: SFT, shares) -> list[float]:
    """Seconds of each rank's forward/backward over its share (run one after the other)."""
    times = []
    for share in shares:
        start = time.perf_counter()
        algo.accumulate(share)
        times.append(time.perf_counter() - start)
        algo.model.zero_grad(set_to_none=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--micro", type=int, default=4, help="rows per micro-batch")
    parser.add_argument("--batches", type=int, default=6, help="timed batches, after 1 warm-up")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    tokenizer = build_tokenizer(builtin_corpus())
    size = TinyLlamaSize(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=512,
    )
    model = build_tiny_llama(tokenizer, size, seed=0)
    optimizer, scheduler = make_optimizer(model.parameters(), OptimConfig(), 100)
    algo = SFT(model, tokenizer, optimizer, scheduler, max_len=512, grad_clip=1.0, precision="fp32")
    spec = MicroBatching(rows=args.micro)
    batches = [
        algo.encode(skewed_pairs(args.batch, seed)) for seed in range(args.batches + 1)
    ]  # the first is the warm-up
    step: dict[str, list[float]] = {"none": [], "tokens": []}
    parts: dict[str, int] = {}
    speed: dict[str, list[float]] = {"padded": [], "packed": []}
    for i, examples in enumerate(batches):
        for mode in ("none", "tokens"):
            shares = plan_step(
                SFT_KIND, examples, args.world, spec, balance=mode, hidden=args.hidden
            )
            parts[mode] = len(shares[0].parts)
            times = rank_times(algo, shares)
            if i:
                step[mode].append(max(times))
        shares = plan_step(SFT_KIND, examples, args.world, spec, hidden=args.hidden)
        tokens = sum(e.tokens for e in examples)
        for layout in ("padded", "packed"):
            algo.layout = layout
            if i:
                speed[layout].append(tokens / sum(rank_times(algo, shares)))
        algo.layout = "padded"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"Llama {params:.1f}M, {torch.get_num_threads()} threads; {args.world} ranks, batch")
    print(f"{args.batch}, micro-batches of {args.micro} rows; median of {args.batches} batches\n")
    plain, balanced = statistics.median(step["none"]), statistics.median(step["tokens"])
    print("| split | micro-batches per rank | step s (slowest rank) | plain / this |")
    print("|---|---|---|---|")
    print(f"| plain (contiguous) | {parts['none']} | {plain:.3f} | 1.00x |")
    print(f"| token-balanced | {parts['tokens']} | {balanced:.3f} | {plain / balanced:.2f}x |")
    padded, packed = statistics.median(speed["padded"]), statistics.median(speed["packed"])
    print("\n| SFT rows | tokens/s | this / padded |\n|---|---|---|")
    print(f"| padded | {padded:.0f} | 1.00x |")
    print(f"| packed (padding-free) | {packed:.0f} | {packed / padded:.2f}x |")


if __name__ == "__main__":
    main()
