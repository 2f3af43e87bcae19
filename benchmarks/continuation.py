"""Multi-turn sampling: continuing each sequence from its kept KV cache vs recomputing its
whole prefix every turn (what an engine without continuation does), side by side.

``--episodes`` sequences of ``--turns`` turns: each turn samples up to ``--new-tokens`` (rows
end early on ``--eos-ids`` ids, as in RL), then ``--obs-tokens`` observation tokens are
appended (a tool result and the next generation prompt). Both paths sample the same tokens
(same noise; tested in tests/rollout/test_continuation.py); the table gives the median wall
time of a whole episode batch and the tokens fed to the model (prefill + decode).

    python benchmarks/continuation.py                 # ~26M Llama, 32 episodes x 4 turns
    python benchmarks/continuation.py --layers 2 --hidden 128 --intermediate 344 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from generation import build_model, build_prompts  # benchmarks/generation.py

from placerl.rollout.continuation import TurnRequest, generate_turns
from placerl.rollout.sampling import SamplingParams

PAD = 0


def episode_batch(model, args, prompts: list[list[int]], reuse: bool) -> tuple[int, int]:
    """One batch of episodes; returns (sampled tokens, tokens fed to the model)."""
    rng = torch.Generator().manual_seed(7)
    noise = torch.rand((len(prompts), args.turns, args.new_tokens), generator=rng)
    obs = torch.randint(1, args.vocab, (len(prompts), args.turns, args.obs_tokens), generator=rng)
    eos = list(range(1, 1 + args.eos_ids))
    params = SamplingParams(max_new_tokens=args.new_tokens)
    fed = 0
    forward = model.forward

    def counting(*a, **kw):
        nonlocal fed
        fed += int(kw["input_ids"].numel())
        return forward(*a, **kw)

    model.forward = counting
    try:
        live = {
            i: TurnRequest(tuple(p), None, args.new_tokens, noise[i, 0])
            for i, p in enumerate(prompts)
        }
        sampled = 0
        for turn in range(args.turns):
            rows = sorted(live)
            results = generate_turns(
                model,
                [live[i] for i in rows],
                params,
                eos_token_id=eos,
                pad_token_id=PAD,
                reuse_cache=reuse,
            )
            live = {}
            for i, result in zip(rows, results):
                sampled += len(result.ids)
                if result.context is not None and turn + 1 < args.turns:
                    bridge = tuple(obs[i, turn].tolist())
                    live[i] = TurnRequest(
                        bridge, result.context, args.new_tokens, noise[i, turn + 1]
                    )
    finally:
        model.forward = forward
    return sampled, fed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--vocab", type=int, default=363)
    parser.add_argument("--batch", type=int, default=32, help="episodes")
    parser.add_argument("--min-prompt", type=int, default=20)
    parser.add_argument("--max-prompt", type=int, default=30)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--obs-tokens", type=int, default=16)
    parser.add_argument("--eos-ids", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    args.ragged_new_tokens = args.new_tokens
    args.max_prompt_total = args.max_prompt + args.turns * (args.new_tokens + args.obs_tokens + 1)
    model = build_model(_with_positions(args))
    ids, mask = build_prompts(args)
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    times: dict[bool, list[float]] = {True: [], False: []}
    counts: dict[bool, tuple[int, int]] = {}
    for reuse in (True, False):  # warm-up
        episode_batch(model, args, prompts, reuse)
    for _ in range(args.runs):
        for reuse in (True, False):
            start = time.perf_counter()
            counts[reuse] = episode_batch(model, args, prompts, reuse)
            times[reuse].append(time.perf_counter() - start)
    print(
        f"{args.batch} episodes x {args.turns} turns | <= {args.new_tokens} new + "
        f"{args.obs_tokens} observation tokens a turn | {torch.get_num_threads()} threads | "
        f"median of {args.runs}, interleaved"
    )
    print(f"{'path':24s} {'seconds':>8s} {'sampled':>8s} {'fed':>8s}")
    for reuse, name in ((True, "kept KV cache"), (False, "recompute the prefix")):
        sampled, fed = counts[reuse]
        print(f"{name:24s} {statistics.median(times[reuse]):8.3f} {sampled:8d} {fed:8d}")
    ratio = statistics.median(times[False]) / statistics.median(times[True])
    print(f"continuation speedup: {ratio:.2f}x")


def _with_positions(args: argparse.Namespace) -> argparse.Namespace:
    """build_model sizes positions as prompt + max(new_tokens, ragged): room for all turns."""
    out = argparse.Namespace(**vars(args))
    out.new_tokens = out.ragged_new_tokens = args.max_prompt_total
    return out


if __name__ == "__main__":
    main()
