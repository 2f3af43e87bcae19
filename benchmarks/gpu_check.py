"""GPU check: placerl on a ~0.5B Qwen2-shaped model in bf16, in a few minutes on one H100/H200.

Prints, each measured in this one run (``benchmarks/gpu_check.sh`` calls it):

0. every stage (sft, rm, dpo, ppo, grpo, rloo, online_dpo, rso, brain) trained, evaluated and
   saved on the device in bf16, on a tiny model: "ok" or the error (exit 1 if any failed);
1. GRPO and DPO step time and the update's MFU: 6·N·tokens / update time / peak, N every
   parameter (the tied embedding once: it is also the LM head's matmul), tokens the
   step's prompt + response tokens, peak ``--peak-tflops`` (989: H100/H200 dense bf16);
2. generation tokens/s of placerl's sampler vs ``model.generate``, same prompts, bf16;
3. peak memory (``torch.cuda.max_memory_allocated``) of one GRPO and one DPO step, plain and
   with ``model.gradient_checkpointing`` / ``model.lora`` where the config has them (rows
   skipped with a note otherwise);
4. a Flatten run on Ray (NCCL between GPU workers): each worker's weight checksum after two
   steps, the controller mirror's, and the local runtime's on the same seed.

The model is built here, random init (``transformers.Qwen2Config``: hidden 896, 24 layers, 14
heads, 2 KV heads, intermediate 4864, vocabulary 151936, tied embeddings) with placerl's
built-in tokenizer (its ids are a prefix of the padded vocabulary). ``--cpu --tiny`` runs
everything on a tiny model on the CPU (gloo instead of NCCL): a smoke test of the script.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
QWEN2_05B = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151936,
)
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=1024,
)


def distinct_characters(completions: list[str], **_) -> list[float]:
    """A reward with signal for a random model (its responses never end early, all tie on
    length): the number of distinct characters. Imported by Ray workers by this name."""
    return [float(len(set(c))) for c in completions]


REWARD = "reward.function=benchmarks.gpu_check:distinct_characters"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (smoke test)")
    p.add_argument("--tiny", action="store_true", help="a tiny model instead of 0.5B")
    p.add_argument("--steps", type=int, default=3, help="measured steps per stage (+1 warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="GRPO prompts per step")
    p.add_argument("--samples", type=int, default=4, help="GRPO samples per prompt")
    p.add_argument("--new-tokens", type=int, default=128, help="response budget")
    p.add_argument("--pairs", type=int, default=64, help="DPO pairs per step")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak")
    p.add_argument("--skip-ray", action="store_true", help="leave out the Flatten run")
    p.add_argument("--skip-stages", action="store_true", help="leave out the every-stage run")
    p.add_argument("--workdir", default=None, help="where the model and runs go (default tmp)")
    return p.parse_args(argv)


def build_model_dir(path: Path, dims: dict, seed: int = 0) -> int:
    """A random-init Qwen2 with placerl's tokenizer, saved; returns its parameter count."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from placerl.models.factory import build_tokenizer, save_tokenizer
    from placerl.stages.sources import builtin_corpus

    tokenizer = build_tokenizer(builtin_corpus())
    if len(tokenizer) > dims["vocab_size"]:
        raise SystemExit(f"tokenizer has {len(tokenizer)} tokens > vocab {dims['vocab_size']}")
    config = Qwen2Config(
        **dims,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(path)
    save_tokenizer(tokenizer, path)
    return sum(p.numel() for p in model.parameters())


def config(args, work: Path, model_dir: Path, stage: str, name: str, *extra: str):
    from placerl.config import load_config
    from placerl.config.schema import RunConfig

    overrides = [
        f"stage={stage}",
        f"run_dir={work / name}",
        f"model.path={model_dir}",
        "model.precision=bf16",
        f"placement.device={'cpu' if args.cpu else 'gpu'}",
        "data.num_eval=0",
        f"trainer.steps={args.steps + 1}",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        f"rollout.max_new_tokens={args.new_tokens}",
    ]
    if stage == "grpo":
        overrides += [
            f"trainer.batch_size={args.prompts}",
            f"rollout.samples_per_prompt={args.samples}",
            REWARD,
            # rows whose rewards tie would be left out of the update: keep its full work
            "grpo.skip_uninformative=false",
        ]
    else:
        overrides += [f"trainer.batch_size={args.pairs}"]
    return load_config(None, [*overrides, *extra], RunConfig)


def sync(args) -> None:
    if not args.cpu:
        torch.cuda.synchronize()


def run_steps(args, cfg, steps: int, inspect=None) -> tuple[list[dict], object]:
    """Build the stage, run ``steps`` steps, ``inspect(stage)``, close and free it (so the
    next measurement's peak memory holds no model of this one); each step's metrics with
    its phase times, and what ``inspect`` returned."""
    from placerl.stages import build_stage
    from placerl.timing import PhaseTimer

    stage, timer, rows, seen = build_stage(cfg), PhaseTimer(), [], None
    try:
        timer.pop()
        for step in range(steps):
            metrics = stage.step(step, timer)
            sync(args)
            rows.append(metrics | timer.pop())
        seen = inspect(stage) if inspect is not None else None
    finally:
        if hasattr(stage, "close"):
            stage.close()  # Ray workers, when there are any
        del stage
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows, seen


def mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return sum(values) / max(1, len(values))


STAGES = ("sft", "rm", "dpo", "ppo", "grpo", "rloo", "online_dpo", "rso", "brain")


def every_stage(args, work: Path) -> list[str]:
    """Each stage trained for 2 steps, evaluated and saved on the device, in bf16, on the
    tiny model: ``placement.device`` and bf16 in every stage. Returns the stages that failed
    (each failure is printed and the check goes on)."""
    import traceback

    from placerl.config import load_config
    from placerl.config.schema import RunConfig
    from placerl.trainer import train

    print("\n## every stage on the device (tiny model, bf16, 2 steps + evaluation)")
    model_dir = work / "tiny_model"
    build_model_dir(model_dir, TINY)
    failed = []
    for stage in STAGES:
        overrides = [
            f"stage={stage}",
            f"run_dir={work / 'stages' / stage}",
            f"model.path={model_dir}",
            "model.precision=bf16",
            f"placement.device={'cpu' if args.cpu else 'gpu'}",
            "data.builtin_size=32",
            "data.num_eval=4",
            "trainer.steps=2",
            "trainer.batch_size=4",
            "trainer.progress=false",
            "trainer.tensorboard=false",
            "trainer.log_samples=0",
            "rollout.max_new_tokens=8",
        ]
        if stage not in ("sft", "rm", "dpo"):
            overrides.append(REWARD)
        if stage in ("grpo", "rloo", "online_dpo"):
            overrides.append("rollout.samples_per_prompt=2")
        start = time.perf_counter()
        try:
            metrics = train(load_config(None, overrides, RunConfig))
        except Exception as err:  # report every stage, then fail at the end
            failed.append(stage)
            print(f"{stage}: FAILED {type(err).__name__}: {err}")
            traceback.print_exc(limit=-3)
            continue
        shown = ", ".join(f"{k}={v:.3g}" for k, v in sorted(metrics.items())[:3])
        print(f"{stage}: ok in {time.perf_counter() - start:.1f} s ({shown})")
    return failed


def step_times(args, work, model_dir, params: int) -> None:
    print("\n## step time and MFU (bf16; first step is warm-up, not counted)")
    for stage_name in ("grpo", "dpo"):
        cfg = config(args, work, model_dir, stage_name, f"{stage_name}_time")
        rows, _ = run_steps(args, cfg, args.steps + 1)
        rows = rows[1:]
        tokens, update = mean(rows, "throughput/tokens"), mean(rows, "time/update")
        mfu = 6 * params * tokens / max(update, 1e-9) / (args.peak_tflops * 1e12)
        phases = ", ".join(
            f"{k[5:]} {mean(rows, k):.3f} s"
            for k in sorted({k for r in rows for k in r if k.startswith("time/")} - {"time/step"})
        )
        print(
            f"{stage_name}: step {mean(rows, 'time/step'):.3f} s ({phases}); "
            f"{tokens:.0f} tokens a step; update MFU {100 * mfu:.1f}% of "
            f"{args.peak_tflops:.0f} TFLOP/s"
        )


def generation(args, model_dir: Path) -> None:
    from placerl.config.schema import BUILTIN, RunConfig
    from placerl.models.loading import load_policy, load_tokenizer
    from placerl.models.precision import autocast
    from placerl.rollout.sampling import SamplingParams, generate
    from placerl.stages.sources import prompt_set

    print(f"\n## generation, {args.prompts * args.samples} rows x {args.new_tokens} new tokens")
    device = torch.device("cpu" if args.cpu else "cuda")
    tokenizer = load_tokenizer(model_dir)
    model = load_policy(model_dir).to(device)
    rows = args.prompts * args.samples
    cfg = RunConfig(stage="sft")
    prompts = prompt_set(cfg, tokenizer, BUILTIN, "train").batch(
        list(range(args.prompts)), tokenizer.pad_token_id, args.samples
    )
    ids, mask = prompts.ids.to(device), prompts.mask.to(device)
    params = SamplingParams(max_new_tokens=args.new_tokens, precision="bf16")
    generator = torch.Generator().manual_seed(0)

    def placerl_once() -> int:
        batch = generate(
            model,
            ids,
            mask,
            params,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            generator=generator,
        )
        return int(batch["response_mask"].sum())

    def hf_once() -> int:
        with autocast("bf16"):
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                top_k=0,
                max_new_tokens=args.new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = out[:, ids.shape[1] :]
        return int((new != tokenizer.pad_token_id).sum())

    results = {}
    for name, fn in (("placerl", placerl_once), ("model.generate", hf_once)):
        fn()  # warm-up
        sync(args)
        start = time.perf_counter()
        tokens = fn()
        sync(args)
        results[name] = tokens / (time.perf_counter() - start)
        print(f"{name}: {results[name]:.0f} tokens/s ({tokens} tokens, {rows} rows)")
    print(f"placerl / model.generate: {results['placerl'] / results['model.generate']:.2f}x")
    engine_section = _sibling("gpu_check_vllm").engine_section
    engine_section(args, model_dir, ids, mask, results["placerl"])


def _sibling(name: str):
    """A module next to this file (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def option_rows() -> list[tuple[str, tuple[str, ...], str | None]]:
    """(label, overrides, why it is skipped or None) for the memory table."""
    from placerl.config.schema import ModelConfig

    fields = ModelConfig.model_fields
    rows = [("plain", (), None)]
    rows.append(
        (
            "gradient checkpointing",
            ("model.gradient_checkpointing=true",),
            None if "gradient_checkpointing" in fields else "no model.gradient_checkpointing",
        )
    )
    rows.append(
        (
            "LoRA r=16",
            ("model.lora={r: 16, alpha: 32}",),
            None if "lora" in fields else "no model.lora",
        )
    )
    return rows


def memory(args, work, model_dir) -> None:
    print("\n## peak memory of one step (torch.cuda.max_memory_allocated)")
    if args.cpu:
        print("(CPU run: no CUDA allocator to read; each row only runs the step)")
    for stage_name in ("grpo", "dpo"):
        for label, extra, skipped in option_rows():
            if skipped:
                print(f"{stage_name} {label}: skipped ({skipped} in this version of placerl)")
                continue
            name = f"{stage_name}_mem_{len(extra)}_{label.split()[0].lower()}"
            try:
                cfg = config(args, work, model_dir, stage_name, name, *extra)
            except Exception as err:  # a field that exists but takes another shape
                print(f"{stage_name} {label}: skipped (config refused: {err})")
                continue
            if not args.cpu:
                torch.cuda.reset_peak_memory_stats()
            run_steps(args, cfg, 1)
            peak = "n/a" if args.cpu else f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
            print(f"{stage_name} {label}: peak {peak}")


def flatten_on_ray(args, work, model_dir) -> None:
    """Flatten over every visible GPU (NCCL; 2 gloo workers with --cpu): the workers'
    weights must agree bitwise (replicas after all-reduced updates), the controller's mirror
    must equal them (the pull), and the weights must have moved. The local run on the same
    seed is the invariant, up to rounding: workers compute their rows as smaller batches."""
    import ray

    from placerl.models.loading import load_policy
    from placerl.runtime.sync.transport import checksum

    workers = 2 if args.cpu else max(1, torch.cuda.device_count())
    backend = "gloo" if args.cpu else "nccl"
    print(f"\n## Flatten on Ray: {workers} workers, {backend}, 2 GRPO steps")
    extra = ("placement.strategy=flatten", f"placement.num_workers={workers}")
    cfg = config(args, work, model_dir, "grpo", "flatten", *extra)
    start = time.perf_counter()

    def weights(stage):
        refs = [actor.weights.remote("actor") for actor in stage.runtime.group.actors]
        ranks = [checksum(w)[:16] for w in ray.get(refs)]
        stage.runtime.pull_weights()
        return ranks, {k: v.detach().cpu().clone() for k, v in stage.policy.state_dict().items()}

    rows, (ranks, mirror) = run_steps(args, cfg, 2, weights)
    elapsed = time.perf_counter() - start
    print(
        f"startup + 2 steps {elapsed:.1f} s; step times {[round(r['time/step'], 3) for r in rows]}"
    )
    print(f"worker checksums {ranks}: {'all equal' if len(set(ranks)) == 1 else 'DIFFER'}")
    mirror_sum = checksum(mirror)[:16]
    print(f"controller mirror {mirror_sum}: {'equal' if mirror_sum == ranks[0] else 'DIFFERS'}")
    initial = load_policy(model_dir).state_dict()
    moved = max(float((mirror[k] - v).abs().max()) for k, v in initial.items())
    print(f"largest weight change from the initial model: {moved:.2e}")
    local_cfg = config(args, work, model_dir, "grpo", "flatten_local")
    local_rows, local = run_steps(
        args,
        local_cfg,
        2,
        lambda stage: {k: v.detach().cpu().clone() for k, v in stage.policy.state_dict().items()},
    )
    gap = max(float((mirror[k] - v).abs().max()) for k, v in local.items())
    loss_gap = max(
        abs(a["loss/policy"] - b["loss/policy"]) for a, b in zip(rows, local_rows, strict=True)
    )
    print(f"local runtime, same seed: max |weight gap| {gap:.2e}, max |loss gap| {loss_gap:.2e}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if str(ROOT) not in sys.path:  # the reward function's module, here and on Ray workers
        sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu --tiny for the smoke test")
    dims = TINY if args.tiny else QWEN2_05B
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        model_dir = work / "model"
        params = build_model_dir(model_dir, dims)
        where = "CPU" if args.cpu else torch.cuda.get_device_name()
        print(f"# placerl GPU check on {where}: Qwen2-shaped, {params / 1e6:.1f}M parameters, bf16")
        failed = [] if args.skip_stages else every_stage(args, work)
        step_times(args, work, model_dir, params)
        generation(args, model_dir)
        memory(args, work, model_dir)
        if args.skip_ray:
            print("\n## Flatten on Ray: skipped (--skip-ray)")
        else:
            flatten_on_ray(args, work, model_dir)
    if failed:
        print(f"\nFAILED stages on the device: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
