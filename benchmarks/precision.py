"""bf16 autocast vs fp32 on this CPU: seconds per SFT step of placerl's own update.

    python benchmarks/precision.py                  # 24M Llama (hidden 512, 6 layers)
    python benchmarks/precision.py --steps 7 --hidden 256 --layers 6

Whether bf16 helps on a CPU depends on the CPU: without native bf16 matmuls (AVX512-BF16 or
AMX) autocast converts and computes slowly; with them it can be faster. So the README states
what this measured, on which CPU, instead of a rule. Two workloads: short rows (the built-in
digit reversal, batch 64, ~12 tokens) and long rows (100-digit reversals, batch 16, ~205
tokens). The two precisions alternate step by step on copies of one model; the median of the
steps after two warm-ups is printed, with the ratio fp32 / bf16 (> 1: bf16 is faster).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from placerl.algos.sft import SFT
from placerl.config.schema import OptimConfig
from placerl.models.factory import TinyLlamaSize, build_tiny_llama, build_tokenizer
from placerl.roles.common import make_optimizer
from placerl.stages.sources import builtin_corpus
from placerl.tasks.reversal import ReversalTask


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> str:
    flags = _cpuinfo()
    found = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f" {f}" in flags]
    return ", ".join(found) or "none of avx2/avx512/bf16"


def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def trainer(model, tokenizer, precision: str) -> SFT:
    optimizer, scheduler = make_optimizer(model.parameters(), OptimConfig(lr=1e-4), 100)
    return SFT(
        model, tokenizer, optimizer, scheduler, max_len=512, grad_clip=1.0, precision=precision
    )


def measure(model, tokenizer, pairs, steps: int) -> dict[str, float]:
    runs = {p: trainer(copy.deepcopy(model), tokenizer, p) for p in ("fp32", "bf16")}
    times: dict[str, list[float]] = {p: [] for p in runs}
    for _ in range(steps):
        for precision, sft in runs.items():
            start = time.perf_counter()
            sft.step(pairs)
            times[precision].append(time.perf_counter() - start)
    return {p: statistics.median(t[2:]) for p, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--steps", type=int, default=7, help="per precision, 2 are warm-up")
    args = parser.parse_args()
    tokenizer = build_tokenizer(builtin_corpus())
    tokenizer.pad_token = tokenizer.eos_token
    size = TinyLlamaSize(
        hidden_size=args.hidden, num_hidden_layers=args.layers, intermediate_size=4 * args.hidden
    )
    model = build_tiny_llama(tokenizer, size, seed=0)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{cpu_name()} ({cpu_flags()}), {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"Llama {params:.1f}M parameters, SFT step (forward, backward, fused AdamW)\n")
    print("| rows | fp32 s/step | bf16 s/step | fp32 / bf16 |\n|---|---|---|---|")
    workloads = {
        "short: 64 × ~12 tokens": ReversalTask().sft_rows(64, seed=0),
        "long: 16 × ~205 tokens": ReversalTask(length=100).sft_rows(16, seed=0),
    }
    for name, rows in workloads.items():
        pairs = [(r["prompt"], r["completion"]) for r in rows]
        t = measure(model, tokenizer, pairs, args.steps)
        print(f"| {name} | {t['fp32']:.3f} | {t['bf16']:.3f} | {t['fp32'] / t['bf16']:.2f}x |")


if __name__ == "__main__":
    main()
