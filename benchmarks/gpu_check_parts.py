"""The GPU check's measuring parts: the model, every stage, step time and MFU, generation,
peak memory (``gpu_check.py`` says what each figure is; each records into ``Results``)."""

from __future__ import annotations

import gc
import shutil
import time
import traceback
from pathlib import Path

import torch

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
STAGES = ("sft", "rm", "dpo", "ppo", "grpo", "rloo", "online_dpo", "rso", "brain")
REWARD = "reward.function=benchmarks.gpu_check_reward:distinct_characters"


def build_model_dir(path: Path, dims: dict, on_gpu: bool, seed: int = 0) -> int:
    """A random-init Qwen2 with placerl's tokenizer, saved (once: a later part reuses it);
    its parameter count."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from placerl.models.factory import build_tokenizer, save_tokenizer
    from placerl.stages.sources import builtin_corpus

    tiny = path.parent / "tiny_model"
    if dims == TINY and path != tiny and (tiny / "config.json").exists():
        shutil.copytree(tiny, path, dirs_exist_ok=True)  # --tiny: the stages' model is the one
    if (path / "config.json").exists():
        config = Qwen2Config.from_pretrained(path)
        with torch.device("meta"):
            return sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())
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
    with torch.device("cuda" if on_gpu else "cpu"):  # random init of 0.5B is quicker there
        model = Qwen2ForCausalLM(config)
    model.save_pretrained(path)
    save_tokenizer(tokenizer, path)
    return sum(p.numel() for p in model.parameters())


def overrides(args, work: Path, model_dir: Path, stage: str, name: str, *extra: str) -> list[str]:
    """The measured runs' config, as overrides (the planner's CLI call takes the same)."""
    out = [
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
        out += [
            f"trainer.batch_size={args.prompts}",
            f"rollout.samples_per_prompt={args.samples}",
            REWARD,
            # rows whose rewards tie would be left out of the update: keep its full work
            "grpo.skip_uninformative=false",
        ]
    else:
        out += [f"trainer.batch_size={args.pairs}"]
    return [*out, *extra]


def config(args, work: Path, model_dir: Path, stage: str, name: str, *extra: str):
    from placerl.config import load_config
    from placerl.config.schema import RunConfig

    return load_config(None, overrides(args, work, model_dir, stage, name, *extra), RunConfig)


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


def every_stage(args, work: Path, results) -> list[str]:
    """Each stage trained for 2 steps, evaluated and saved on the device, in bf16, on the
    tiny model: ``placement.device`` and bf16 in every stage. Returns the stages that failed
    (each failure is printed and the check goes on)."""
    from placerl.config import load_config
    from placerl.config.schema import RunConfig
    from placerl.trainer import train

    print("\n## every stage on the device (tiny model, bf16, 2 steps + evaluation)")
    model_dir = work / "tiny_model"
    build_model_dir(model_dir, TINY, on_gpu=not args.cpu)
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
            results.add("stages", stage, f"error: {type(err).__name__}: {str(err)[:160]}")
            continue
        seconds = time.perf_counter() - start
        shown = ", ".join(f"{k}={v:.3g}" for k, v in sorted(metrics.items())[:3])
        print(f"{stage}: ok in {seconds:.1f} s ({shown})")
        results.add("stages", stage, "ok", f"{seconds:.1f} s, bf16 on {device_name(args)}")
    return failed


def device_name(args) -> str:
    return "CPU" if args.cpu else torch.cuda.get_device_name()


def peak_tflops(args) -> tuple[float, str]:
    """The dense bf16 peak MFU divides by: --peak-tflops, else the device's spec, else the
    H100's (989)."""
    from gpu_check_planner import peak_bf16

    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    found = None if args.cpu else peak_bf16(device_name(args))
    return found or (989.0, "H100 spec" + (" (a CPU run: no peak of its own)" if args.cpu else ""))


def step_times(args, work: Path, model_dir: Path, params: int, results) -> None:
    print("\n## step time and MFU (bf16; first step is warm-up, not counted)")
    peak, source = peak_tflops(args)
    for stage_name in ("grpo", "dpo"):
        cfg = config(args, work, model_dir, stage_name, f"{stage_name}_time")
        rows, _ = run_steps(args, cfg, args.steps + 1)
        rows = rows[1:]
        tokens, update = mean(rows, "throughput/tokens"), mean(rows, "time/update")
        mfu = 6 * params * tokens / max(update, 1e-9) / (peak * 1e12)
        phases = ", ".join(
            f"{k[5:]} {mean(rows, k):.3f} s"
            for k in sorted({k for r in rows for k in r if k.startswith("time/")} - {"time/step"})
        )
        step = mean(rows, "time/step")
        print(
            f"{stage_name}: step {step:.3f} s ({phases}); "
            f"{tokens:.0f} tokens a step; update MFU {100 * mfu:.1f}% of "
            f"{peak:.0f} TFLOP/s ({source})"
        )
        results.add("steps", f"{stage_name} step time", f"{step:.3f} s", phases, number=step)
        note = (
            f"6·N·tokens / update time / peak: N {params / 1e6:.1f}M, {tokens:.0f} tokens, "
            f"update {update:.3f} s, peak {peak:.0f} TFLOP/s ({source})"
        )
        results.add("steps", f"{stage_name} update MFU", f"{100 * mfu:.1f}%", note, number=mfu)


def _prompts(args, model_dir: Path, rows: int, device):
    from placerl.config.schema import BUILTIN, RunConfig
    from placerl.models.loading import load_tokenizer
    from placerl.stages.sources import prompt_set

    tokenizer = load_tokenizer(model_dir)
    prompts = prompt_set(RunConfig(stage="sft"), tokenizer, BUILTIN, "train")
    batch = prompts.batch([i % len(prompts) for i in range(rows)], tokenizer.pad_token_id)
    return tokenizer, batch.ids.to(device), batch.mask.to(device)


def generation(args, model_dir: Path, results) -> None:
    """placerl's sampler and ``model.generate``, the same rows and budget, at each row count."""
    from placerl.models.loading import load_policy
    from placerl.models.precision import autocast
    from placerl.rollout.sampling import SamplingParams, generate

    device = torch.device("cpu" if args.cpu else "cuda")
    model = load_policy(model_dir).to(device)
    params = SamplingParams(max_new_tokens=args.new_tokens, precision="bf16")
    generator = torch.Generator().manual_seed(0)
    rates = {}
    for rows in args.rows:
        print(f"\n## generation, {rows} rows x {args.new_tokens} new tokens")
        tokenizer, ids, mask = _prompts(args, model_dir, rows, device)
        pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

        def placerl_once(ids=ids, mask=mask, pad=pad, eos=eos, model=model) -> int:
            out = generate(
                model, ids, mask, params, eos_token_id=eos, pad_token_id=pad, generator=generator
            )
            return int(out["response_mask"].sum())

        def hf_once(ids=ids, mask=mask, pad=pad, eos=eos, model=model) -> int:
            with autocast("bf16"):
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=args.new_tokens,
                    pad_token_id=pad,
                    eos_token_id=eos,
                )
            return int((out[:, ids.shape[1] :] != pad).sum())

        for name, fn in (("placerl sampler", placerl_once), ("model.generate", hf_once)):
            fn()  # warm-up
            sync(args)
            start = time.perf_counter()
            tokens = fn()
            sync(args)
            rates[name, rows] = tokens / (time.perf_counter() - start)
            print(f"{name}: {rates[name, rows]:.0f} tokens/s ({tokens} tokens, {rows} rows)")
            note = f"{tokens} tokens, {args.new_tokens} new a row, bf16"
            figure = f"{name}, {rows} rows"
            results.add("generation", figure, f"{rates[name, rows]:.0f} tokens/s", note)
        ratio = rates["placerl sampler", rows] / rates["model.generate", rows]
        print(f"placerl / model.generate: {ratio:.2f}x")
        results.add("generation", f"placerl / model.generate, {rows} rows", f"{ratio:.2f}x")
    from gpu_check_vllm import engine_section

    rows = max(args.rows)
    _, ids, mask = _prompts(args, model_dir, rows, device)
    del model
    gc.collect()
    engine_section(args, model_dir, ids, mask, rates["placerl sampler", rows], results)


def option_rows() -> list[tuple[str, tuple[str, ...], str | None]]:
    """(label, overrides, why it is skipped or None) for the memory table."""
    from placerl.config.schema import ModelConfig

    fields = ModelConfig.model_fields
    return [
        ("plain", (), None),
        (
            "gradient checkpointing",
            ("model.gradient_checkpointing=true",),
            None if "gradient_checkpointing" in fields else "no model.gradient_checkpointing",
        ),
        (
            "LoRA r=16",
            ("model.lora={r: 16, alpha: 32}",),
            None if "lora" in fields else "no model.lora",
        ),
    ]


def memory(args, work: Path, model_dir: Path, results) -> None:
    print("\n## peak memory of one step (torch.cuda.max_memory_allocated)")
    if args.cpu:
        print("(CPU run: no CUDA allocator to read; each row only runs the step)")
    for stage_name in ("grpo", "dpo"):
        for label, extra, skipped in option_rows():
            figure = f"{stage_name} {label}"
            if skipped:
                print(f"{figure}: skipped ({skipped} in this version of placerl)")
                results.add("memory", figure, f"skipped: {skipped}")
                continue
            name = f"{stage_name}_mem_{len(extra)}_{label.split()[0].lower()}"
            try:
                cfg = config(args, work, model_dir, stage_name, name, *extra)
            except Exception as err:  # a field that exists but takes another shape
                print(f"{figure}: skipped (config refused: {err})")
                results.add("memory", figure, "skipped: config refused", str(err)[:160])
                continue
            if not args.cpu:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run_steps(args, cfg, 1)
            seconds = time.perf_counter() - start
            peak = None if args.cpu else torch.cuda.max_memory_allocated() / 2**30
            shown = "n/a (CPU)" if peak is None else f"{peak:.2f} GiB"
            print(f"{figure}: peak {shown}")
            note = f"one step incl. build, {seconds:.1f} s; torch.cuda.max_memory_allocated"
            results.add("memory", figure, shown, note, number=peak)
