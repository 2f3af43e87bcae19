"""GPU check: placerl on a ~0.5B Qwen2-shaped model in bf16, in under 8 minutes on one H100/H200.

Measures, in this order (most important first; ``gpu_check.sh`` runs each part in its own
time-boxed process, ``--part``), and writes every figure to ``gpu_check.jsonl`` and one table
(``gpu_check.md``) under ``--out``:

1. ``stages``: every stage (sft, rm, dpo, ppo, grpo, rloo, online_dpo, rso, brain) trained,
   evaluated and saved on the device in bf16, on a tiny model: ok or the error;
2. ``steps``: GRPO and DPO step time and the update's MFU: 6·N·tokens / update time / peak,
   N every parameter (the tied embedding once: it is also the LM head's matmul), tokens the
   step's prompt + response tokens, peak the device's dense bf16 figure from
   ``placerl/placement/hardware`` (matched on its CUDA name; ``--peak-tflops`` overrides);
3. ``generation``: tokens/s of placerl's sampler and of ``model.generate``, the same rows
   (``--rows``: 32 and 256) and budget, bf16; vLLM beside them where it is installed;
4. ``memory``: peak ``torch.cuda.max_memory_allocated`` of one GRPO and one DPO step, plain,
   with ``model.gradient_checkpointing`` and with ``model.lora``;
5. ``ray``: Flatten on Ray, NCCL between GPU workers (needs Ray and 2 GPUs; 2 gloo workers
   with ``--cpu``): the workers' and the controller mirror's weight checksums;
6. ``plan``: the planner's predicted step time for the measured GRPO step (``placerl plan
   --auto --json``, the local plan, settings held to the measured run's) vs the measured one,
   on the device's specs; ``profile``: ``placerl profile --device gpu`` of the 0.5B model (GPU
   only); then ``plan --plan-after-profile``: the same prediction on that profile.

The model is built here, random init (``transformers.Qwen2Config``: hidden 896, 24 layers, 14
heads, 2 KV heads, intermediate 4864, vocabulary 151936, tied embeddings) with placerl's
built-in tokenizer (its ids are a prefix of the padded vocabulary). ``--cpu --tiny`` runs
everything on a tiny model on the CPU (gloo instead of NCCL): a smoke test of the script.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the gpu_check_* siblings

from gpu_check_parts import QWEN2_05B, STAGES, TINY, option_rows  # noqa: E402
from gpu_check_results import Results, write_table  # noqa: E402

__all__ = ["QWEN2_05B", "STAGES", "TINY", "main", "option_rows", "parse_args"]
PARTS = ("model", "stages", "steps", "generation", "memory", "ray", "plan", "profile", "table")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (smoke test)")
    p.add_argument("--tiny", action="store_true", help="a tiny model instead of 0.5B")
    p.add_argument("--part", choices=PARTS, help="run one part (default: all, in one process)")
    p.add_argument("--steps", type=int, default=3, help="measured steps per stage (+1 warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="GRPO prompts per step")
    p.add_argument("--samples", type=int, default=4, help="GRPO samples per prompt")
    p.add_argument("--new-tokens", type=int, default=128, help="response budget")
    p.add_argument("--pairs", type=int, default=64, help="DPO pairs per step")
    p.add_argument(
        "--rows",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[32, 256],
        help="generation row counts, comma-separated (default 32,256)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="dense bf16 peak for MFU (default: the device's spec; the H100's 989 without one)",
    )
    p.add_argument("--skip-ray", action="store_true", help="leave out the Flatten run")
    p.add_argument("--skip-stages", action="store_true", help="leave out the every-stage run")
    p.add_argument("--workdir", default=None, help="where the models and runs go (default tmp)")
    p.add_argument("--out", default=None, help="where the figures go (default: the workdir)")
    p.add_argument(
        "--plan-after-profile",
        action="store_true",
        help="--part plan: only with the profile part's profile.json (else a skip line)",
    )
    return p.parse_args(argv)


def cli_env(work: Path) -> dict[str, str]:
    """The planner CLI's environment: this checkout importable, profiles kept in ``work``."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PLACERL_PROFILE_DIR": str(work / "profiles")}


def model_part(args, work: Path, results: Results) -> int:
    import torch
    from gpu_check_parts import build_model_dir, device_name

    start = time.perf_counter()
    build_model_dir(work / "tiny_model", TINY, not args.cpu)  # the stages' (and --tiny's)
    params = build_model_dir(work / "model", TINY if args.tiny else QWEN2_05B, not args.cpu)
    where = device_name(args)
    print(f"# placerl GPU check on {where}: Qwen2-shaped, {params / 1e6:.1f}M parameters, bf16")
    note = f"torch {torch.__version__}, {time.perf_counter() - start:.1f} s to build"
    results.add(
        "model", "Qwen2-shaped, random init", f"{params / 1e6:.1f}M params on {where}", note
    )
    return params


def profile_part(args, work: Path, out: Path, results: Results) -> int:
    from gpu_check_parts import overrides
    from gpu_check_planner import profile

    figure = "placerl profile --device gpu"
    if args.cpu:
        why = "a GPU's profile (a CPU's, `placerl profile`, takes minutes and Ray: its own tests)"
        print(f"\n## {figure}: skipped: {why}")
        results.add("profile", figure, f"skipped: {why}")
        return 0
    print(f"\n## {figure} (0.5B model)")
    start = time.perf_counter()
    cli = overrides(args, work, work / "model", "grpo", "grpo_profile")
    code, tail = profile(work, "grpo", cli, out / "profile.json", cli_env(work), timeout=600)
    seconds = time.perf_counter() - start
    value = f"ok in {seconds:.0f} s" if code == 0 else f"error: exit {code}"
    results.add("profile", figure, value, " ".join(tail)[:200])
    return code


def plan_part(args, work: Path, out: Path, results: Results) -> int:
    from gpu_check_parts import config, overrides
    from gpu_check_planner import held_settings, predicted_step

    profiled = (out / "profile.json").exists()
    if args.plan_after_profile and not profiled:
        print("\n## the planner after the profile: skipped: no profile was written")
        results.add("plan", "grpo step predicted, profiled", "skipped: no profile was written")
        return 0
    label = "profiled" if profiled else "before the profile"
    print(f"\n## the planner's predicted GRPO step ({label}) vs the measured one")
    measured = results.number("steps", "grpo step time")
    cfg = config(args, work, work / "model", "grpo", "grpo_time")
    cli = [*overrides(args, work, work / "model", "grpo", "grpo_time"), *held_settings(cfg)]
    figure = f"grpo step predicted, {label}"
    plan_json = out / f"plan{'_profiled' if profiled else ''}.json"
    try:
        found = predicted_step(work, "grpo", cli, plan_json, cli_env(work))
    except Exception as err:  # report it in the table; the measured figures stand
        print(f"placerl plan --auto failed: {type(err).__name__}: {err}")
        results.add("plan", figure, f"error: {type(err).__name__}", str(err)[:200])
        return 1
    step = found["step_s"]
    top = sorted(found["phases"].items(), key=lambda kv: -kv[1])[:3]
    phases = ", ".join(f"{k} {v:.3f} s" for k, v in top)
    note = f"local plan, calibration: {found['calibration']}; {phases}"
    print(f"predicted {step:.3f} s ({note})")
    results.add("plan", figure, f"{step:.3f} s", note, number=step)
    if measured is None:
        results.add("plan", "grpo step measured", "none", "the steps part recorded no step time")
        return 0
    print(f"measured {measured:.3f} s: predicted / measured {step / measured:.2f}")
    if not profiled:
        results.add("plan", "grpo step measured", f"{measured:.3f} s", "the steps part's")
    ratio = f"predicted / measured, {label}"
    results.add("plan", ratio, f"{step / measured:.2f}", number=step / measured)
    return 0


def run_part(name: str, args, work: Path, out: Path, results: Results) -> int:
    """One part; its exit code (1: a stage or the planner call failed)."""
    import gpu_check_parts as parts

    model_dir = work / "model"
    if name == "model":
        model_part(args, work, results)
        return 0
    if name == "stages" and args.skip_stages:
        results.add("stages", "every stage", "skipped: --skip-stages")
        return 0
    if name == "stages":
        return 1 if parts.every_stage(args, work, results) else 0
    if name == "table":
        write_table(results, out / "gpu_check.md")
        return 0
    if name in ("profile", "plan"):
        fn = profile_part if name == "profile" else plan_part
        return fn(args, work, out, results)
    params = parts.build_model_dir(model_dir, TINY if args.tiny else QWEN2_05B, not args.cpu)
    if name == "steps":
        parts.step_times(args, work, model_dir, params, results)
    elif name == "generation":
        parts.generation(args, model_dir, results)
    elif name == "memory":
        parts.memory(args, work, model_dir, results)
    elif name == "ray" and args.skip_ray:
        print("\n## Flatten on Ray: skipped (--skip-ray)")
        results.add("ray", "Flatten on Ray", "skipped: --skip-ray")
    elif name == "ray":
        from gpu_check_ray import flatten_on_ray

        flatten_on_ray(args, work, model_dir, results)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if str(ROOT) not in sys.path:  # the reward function's module, here and on Ray workers
        sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    if args.part != "table":
        import torch

        if not args.cpu and not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --cpu --tiny for the smoke test")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        out = Path(args.out) if args.out else work
        results = Results(out / "gpu_check.jsonl")
        if args.part:
            return run_part(args.part, args, work, out, results)
        codes = {name: run_part(name, args, work, out, results) for name in PARTS}
    failed = [name for name, code in codes.items() if code]
    if failed:
        print(f"\nFAILED parts: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
