"""Generation engines side by side: placerl's sampler, vLLM and ``model.generate``, plus a
GRPO step with each rollout engine. Called by ``benchmarks/generation.py --engines``.

Every row samples the full ``--new-tokens`` (no end token), temperature 1, fp32, the same
left-padded random prompts; runs interleaved (placerl, vLLM, HF, placerl, ...) after one
warm-up each, median of ``--runs``. The vLLM engine is built once per model size (its start-up
is reported apart) from the model saved to a temporary directory. vLLM's CPU backend wants a
head dimension of at least 32, so every size here uses 64.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SIZES = {  # name: (hidden, layers, intermediate); heads = hidden / 64
    "6M": (256, 6, 1024),
    "34M": (512, 8, 1376),
    "100M": (768, 12, 2048),
}
VOCAB = 363
PAD = 0


def build(size: str, directory: Path) -> LlamaForCausalLM:
    hidden, layers, inter = SIZES[size]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=256,
        pad_token_id=PAD,
        eos_token_id=None,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    return model


def prompts(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    from placerl.data.collate import left_pad

    rng = torch.Generator().manual_seed(1)
    lengths = torch.randint(20, 31, (batch,), generator=rng)
    return left_pad(
        [torch.randint(1, VOCAB, (int(n),), generator=rng).tolist() for n in lengths], PAD
    )


def runs(model, engine, ids, mask, new_tokens: int) -> dict:
    from placerl.rollout.sampling import SamplingParams, generate

    params = SamplingParams(max_new_tokens=new_tokens)
    generator = torch.Generator().manual_seed(0)
    seeds = list(range(ids.shape[0]))

    def ours() -> int:
        out = generate(
            model, ids, mask, params, eos_token_id=[VOCAB], pad_token_id=PAD, generator=generator
        )
        return int(out["response_mask"].sum())

    def vllm() -> int:
        return int(engine.generate(ids, mask, params, seeds)["response_mask"].sum())

    def hf() -> int:
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            top_k=None,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=PAD,
            output_scores=True,
            return_dict_in_generate=True,
        )
        return out.sequences[:, ids.shape[1] :].numel()

    return {"placerl": ours, "vllm": vllm, "hf": hf}


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            tokens = fn()
            rates[name].append(tokens / (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in rates.items()}


def generation_table(args: argparse.Namespace) -> None:
    from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine

    print(
        f"tokens/s, fp32, {args.new_tokens} new tokens per row, median of {args.runs}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'model':<7}{'rows':>5}{'placerl':>10}{'vLLM':>10}{'HF':>10}{'vLLM/placerl':>14}"
        f"{'placerl/HF':>12}"
    )
    for size in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            model = build(size, Path(tmp))
            start = time.perf_counter()
            engine = VLLMEngine(
                tmp, EngineOptions(max_model_len=128), end_token_ids=[], pad_token_id=PAD
            )
            startup = time.perf_counter() - start
            for batch in (int(b) for b in args.batches.split(",")):
                ids, mask = prompts(batch)
                res = interleaved(runs(model, engine, ids, mask, args.new_tokens), args.runs)
                print(
                    f"{size:<7}{batch:>5}{res['placerl']:>10.0f}{res['vllm']:>10.0f}"
                    f"{res['hf']:>10.0f}{res['vllm'] / res['placerl']:>13.2f}x"
                    f"{res['placerl'] / res['hf']:>11.2f}x"
                )
            print(f"        (vLLM engine start-up for {size}: {startup:.1f} s)")
            del engine


def grpo_steps(args: argparse.Namespace) -> None:
    """Median seconds per GRPO step with each rollout engine (same model, data, settings)."""
    import json

    from placerl.config import load_config
    from placerl.config.schema import RunConfig
    from placerl.models.factory import TinyLlamaSize, make_model_dir
    from placerl.stages.sources import builtin_corpus
    from placerl.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(Path(tmp) / "m", builtin_corpus(), TinyLlamaSize(), seed=0)
        print(
            f"GRPO, demo-size model (6.1M), {args.grpo_steps} steps of 16 prompts x 4, "
            f"<= {args.new_tokens} new tokens, rule reward"
        )
        for engine in ("placerl", "vllm"):
            run_dir = Path(tmp) / engine
            cfg = load_config(
                None,
                [
                    "stage=grpo",
                    f"model.path={model_dir}",
                    f"run_dir={run_dir}",
                    f"trainer.steps={args.grpo_steps}",
                    "trainer.batch_size=16",
                    "rollout.samples_per_prompt=4",
                    f"rollout.max_new_tokens={args.new_tokens}",
                    "trainer.progress=false",
                    "trainer.tensorboard=false",
                    "trainer.save_every=0",
                    "data.num_eval=0",
                    "data.builtin_size=2000",
                    f"rollout.engine={engine}",
                    "reward.function=tests.conftest:length_reward",
                ],
                RunConfig,
            )
            start = time.perf_counter()
            train(cfg)
            total = time.perf_counter() - start
            rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
            steps = [r for r in rows if "time/step" in r][1:]  # the first step warms up
            med = statistics.median(r["time/step"] for r in steps)
            gen = statistics.median(r.get("time/generate", 0.0) for r in steps)
            gap = max(r.get("actor/is_log_ratio_abs_max", 0.0) for r in steps)
            print(
                f"  {engine:<8} step {med:.3f} s (generate {gen:.3f} s), run {total:.1f} s "
                f"incl. start-up; max |log π_old − log μ| {gap:.2e}"
            )
