"""placerl's sampler vs transformers' ``model.generate`` (how TRL samples without vLLM).

Both sample the same randomly initialised fp32 Llama on the same left-padded prompts, side by
side in one process, runs interleaved (placerl, HF, placerl, HF, ...) so that a busy machine
slows both alike. Median wall time over ``--runs`` after one warm-up each. Three modes:

- sample / greedy: every row runs the full ``--new-tokens`` (placerl gets an EOS id outside the
  vocabulary, HF gets ``min_new_tokens``). HF returns scores, as an RL trainer asks for them.
- ragged: rows stop at EOS (``--eos-ids`` ids count as EOS), up to ``--ragged-new-tokens``,
  so response lengths vary as they do in RL. Tokens/s counts the tokens actually generated.

HF's outputs carry no per-token log-probs of the sampled tokens; TRL recomputes them with one
forward pass over prompt + response. The last line times that pass and the speedup with it.

    python benchmarks/generation.py                  # ~26M-parameter Llama, 32 x 32 tokens
    python benchmarks/generation.py --layers 2 --hidden 128 --intermediate 344 --runs 3
    python benchmarks/generation.py --engines       # + vLLM: 6M/34M/100M x 32/128 rows, GRPO
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from placerl.data.collate import left_pad
from placerl.models.logprobs import log_probs_from_logits
from placerl.rollout.sampling import SamplingParams, generate

PAD = 0
Run = Callable[[], int]  # one generation; returns the number of tokens it generated


def build_model(args: argparse.Namespace) -> LlamaForCausalLM:
    """A random-init fp32 Llama from a config (seed 0): nothing is downloaded."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.max_prompt + max(args.new_tokens, args.ragged_new_tokens),
    )
    return LlamaForCausalLM(config).eval()


def build_prompts(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` prompts of random non-pad tokens, lengths in [min, max], left-padded."""
    rng = torch.Generator().manual_seed(1)
    lengths = torch.randint(args.min_prompt, args.max_prompt + 1, (args.batch,), generator=rng)
    seqs = [torch.randint(1, args.vocab, (int(n),), generator=rng).tolist() for n in lengths]
    return left_pad(seqs, PAD)


def placerl_run(model, ids, mask, params: SamplingParams, eos: int | list[int]) -> Run:
    generator = torch.Generator().manual_seed(0)

    def run() -> int:
        out = generate(
            model, ids, mask, params, eos_token_id=eos, pad_token_id=PAD, generator=generator
        )
        return int(out["response_mask"].sum())

    return run


def hf_run(model, ids, mask, greedy: bool, new_tokens: int, eos: list[int], force: bool) -> Run:
    """HF ``generate`` as TRL calls it (scores returned); ``force`` runs the full length."""

    def run() -> int:
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=not greedy,
            temperature=None if greedy else 1.0,
            top_p=None if greedy else 1.0,
            top_k=None,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens if force else 0,
            eos_token_id=eos,
            pad_token_id=PAD,
            output_scores=True,
            return_dict_in_generate=True,
        )
        return hf_generated_tokens(out.sequences[:, ids.shape[1] :], eos)

    return run


def hf_generated_tokens(response: torch.Tensor, eos: list[int]) -> int:
    """Tokens HF generated: each row up to and including its first EOS."""
    is_eos = torch.isin(response, torch.tensor(eos))
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0
    return int((~after_eos).sum())


def logprob_pass_run(model, ids, mask, new_tokens: int) -> Run:
    """The forward pass TRL adds to get the sampled tokens' log-probs from HF's sequences."""
    response = torch.randint(1, model.config.vocab_size, (ids.shape[0], new_tokens))
    full_ids = torch.cat([ids, response], 1)
    full_mask = torch.cat([mask, torch.ones_like(response)], 1)

    @torch.no_grad()
    def run() -> int:
        logits = model(input_ids=full_ids, attention_mask=full_mask).logits
        log_probs_from_logits(logits[:, ids.shape[1] - 1 : -1], response)
        return response.numel()

    return run


def interleaved(runs: dict[str, Run], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (seconds, tokens/s) of each run, timed in turns after one warm-up each."""
    for run in runs.values():
        run()
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            tokens = run()
            samples[name].append((time.perf_counter() - start, tokens))
    return {
        name: (statistics.median(s for s, _ in xs), statistics.median(t / s for s, t in xs))
        for name, xs in samples.items()
    }


def modes(args, model, ids, mask) -> dict[str, dict[str, Run]]:
    """The placerl and HF runs of each mode, sharing model, prompts and EOS rules."""
    never = [args.vocab]  # an id outside the vocabulary: never sampled
    ragged_eos = list(range(1, 1 + args.eos_ids))
    n, r = args.new_tokens, args.ragged_new_tokens
    return {
        "sample": {
            "placerl": placerl_run(model, ids, mask, SamplingParams(max_new_tokens=n), never),
            "hf": hf_run(model, ids, mask, False, n, [1], force=True),
        },
        "greedy": {
            "placerl": placerl_run(
                model, ids, mask, SamplingParams(max_new_tokens=n, greedy=True), never
            ),
            "hf": hf_run(model, ids, mask, True, n, [1], force=True),
        },
        "ragged": {
            "placerl": placerl_run(model, ids, mask, SamplingParams(max_new_tokens=r), ragged_eos),
            "hf": hf_run(model, ids, mask, False, r, ragged_eos, force=False),
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--vocab", type=int, default=363)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--min-prompt", type=int, default=20)
    parser.add_argument("--max-prompt", type=int, default=30)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--ragged-new-tokens", type=int, default=64, help="budget in ragged mode")
    parser.add_argument("--eos-ids", type=int, default=8, help="EOS ids in ragged mode")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modes", default="sample,greedy,ragged")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch default")
    engines = parser.add_argument_group("--engines: placerl vs vLLM vs HF (benchmarks/engines.py)")
    engines.add_argument("--engines", action="store_true", help="the engine table + GRPO steps")
    engines.add_argument("--sizes", default="6M,34M,100M")
    engines.add_argument("--batches", default="32,128")
    engines.add_argument("--grpo-steps", type=int, default=6)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.engines:
        from engines import generation_table, grpo_steps  # benchmarks/engines.py

        if args.new_tokens == 32:  # the table's default budget
            args.new_tokens = 64
        generation_table(args)
        grpo_steps(args)
        return
    model = build_model(args)
    ids, mask = build_prompts(args)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"Llama {n_params:.1f}M params fp32 | batch {args.batch} | prompts "
        f"{args.min_prompt}-{args.max_prompt} | {torch.get_num_threads()} threads | "
        f"median of {args.runs}, runs interleaved"
    )
    print(
        f"{'mode':<8}{'placerl s':>10}{'HF s':>8}{'placerl tok/s':>15}{'HF tok/s':>10}{'speedup':>9}"
    )
    all_modes = modes(args, model, ids, mask)
    for mode in args.modes.split(","):
        res = interleaved(all_modes[mode], args.runs)
        (ours, our_rate), (hf, hf_rate) = res["placerl"], res["hf"]
        print(
            f"{mode:<8}{ours:>10.3f}{hf:>8.3f}{our_rate:>15.0f}{hf_rate:>10.0f}{hf / ours:>8.2f}x"
        )
        if mode == "sample":
            sample = (ours, hf)
    if "sample" in args.modes.split(","):
        ((logp, _),) = interleaved(
            {"logp": logprob_pass_run(model, ids, mask, args.new_tokens)}, args.runs
        ).values()
        ours, hf = sample
        print(
            f"HF + the log-prob forward pass TRL adds ({logp:.3f} s): "
            f"{hf + logp:.3f} s, speedup {(hf + logp) / ours:.2f}x"
        )


if __name__ == "__main__":  # the guard matters: vLLM may spawn engine processes
    main()
