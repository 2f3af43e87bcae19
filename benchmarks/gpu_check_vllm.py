"""The GPU check's engine section: vLLM vs placerl's sampler on the same rows, and the memory
vLLM's sleep mode frees for a colocated trainer. Skipped, with a note, without vLLM.

Target on one H100/H200 with the ~0.5B model: vLLM >= 5x placerl's sampler (issue 11).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def engine_section(
    args, model_dir: Path, ids: torch.Tensor, mask: torch.Tensor, placerl_rate, results
):
    from placerl.rollout.sampling import SamplingParams
    from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine, vllm_available

    rows = ids.shape[0]
    figure = f"vLLM, {rows} rows"
    print(f"\n## vLLM engine vs placerl's sampler ({rows} rows, bf16)")
    if not vllm_available():
        why = (
            "vLLM is not installed (its wheel, hundreds of MB, does not travel to the GPU machine)"
        )
        print(f"skipped: {why}")
        results.add("generation", figure, f"skipped: {why}")
        return
    if args.tiny and args.cpu:
        print("note: vLLM's CPU attention needs head_dim >= 32; the tiny model may not load")
    gpu = torch.cuda.is_available() and not args.cpu
    options = EngineOptions(
        dtype="bfloat16",
        max_model_len=ids.shape[1] + args.new_tokens + 8,
        gpu_memory_utilization=0.5,
        enable_sleep_mode=gpu,
    )
    start = time.perf_counter()
    try:
        engine = VLLMEngine(model_dir, options, end_token_ids=[], pad_token_id=0)
    except Exception as err:  # report, do not fail the whole check
        print(f"vLLM failed to start: {type(err).__name__}: {err}")
        results.add("generation", figure, f"error: {type(err).__name__}", str(err)[:160])
        return
    print(f"engine start-up: {time.perf_counter() - start:.1f} s")
    params = SamplingParams(max_new_tokens=args.new_tokens)
    seeds = list(range(ids.shape[0]))
    engine.generate(ids.cpu(), mask.cpu(), params, seeds)  # warm-up
    start = time.perf_counter()
    tokens = int(engine.generate(ids.cpu(), mask.cpu(), params, seeds)["response_mask"].sum())
    rate = tokens / (time.perf_counter() - start)
    print(
        f"vLLM: {rate:.0f} tokens/s ({tokens} tokens); vLLM / placerl: {rate / placerl_rate:.2f}x"
    )
    note = f"vLLM / placerl sampler {rate / placerl_rate:.2f}x"
    results.add("generation", figure, f"{rate:.0f} tokens/s", note)
    if gpu:
        torch.cuda.synchronize()
        before = torch.cuda.mem_get_info()[0]
        engine.sleep()
        torch.cuda.synchronize()
        after = torch.cuda.mem_get_info()[0]
        engine.wake()
        woken = torch.cuda.mem_get_info()[0]
        gib = 2**30
        print(
            f"sleep mode: free memory {before / gib:.1f} GiB awake -> {after / gib:.1f} GiB asleep "
            f"({(after - before) / gib:.1f} GiB freed for the trainer), {woken / gib:.1f} GiB woken"
        )
        freed = f"{(after - before) / gib:.1f} GiB freed"
        results.add("generation", "vLLM sleep mode", freed, f"{woken / gib:.1f} GiB free woken")
    else:
        print("sleep mode: GPU only (not measured here)")
