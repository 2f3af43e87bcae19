"""``placerl demo --task tools``: tool use paying off on a CPU (the calculator task).

Multi-digit ``+`` and ``*`` (placerl/tasks/tool_arithmetic.py) is past the 6M model alone.
Three ordinary ``train`` runs under ``--out``:

- ``direct``: SFT straight to the answer (``4821*39=`` → ``188019``) — accuracy without tools;
- ``sft``: SFT on tool-use demonstrations (call ``calc``, read the result, answer with it);
- ``grpo`` (or ``rloo``): RL on episodes with the calculator (``env.tools``), rewarded by exact
  match of the final answer; its eval at step 0 is the SFT model's accuracy with tools, its
  last eval the accuracy after RL.

The base model's tokenizer is trained on the demonstrations too (its merges cover the tool
call's JSON), and carries the task's chat template (``TOOL_CHAT_TEMPLATE``). Finished stages
are reused and interrupted ones resume, as in the reversal demo (placerl/demo.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from placerl.demo import run_stage
from placerl.models.factory import build_tiny_llama, build_tokenizer, save_tokenizer
from placerl.stages.sources import builtin_corpus
from placerl.tasks.tool_arithmetic import TOOL_CHAT_TEMPLATE, ToolArithmeticTask, demonstration

# Steps measured to fit the demo's budget on 2 CPU cores (README, "Tools and environments").
FULL = {"sft": 200, "direct": 200, "rl": 30, "problems": 4000, "eval": 128}
QUICK = {"sft": 3, "direct": 3, "rl": 2, "problems": 64, "eval": 8}
TOOL = "placerl.tasks.tool_arithmetic:calc"


def base_model(out: Path, seed: int) -> Path:
    """The tiny base model, its tokenizer trained on both built-in tasks and the tool
    demonstrations, with the tool task's chat template."""
    path = out / "base_model"
    if (path / "config.json").exists():
        return path
    texts = [
        f"user: {m[0]['content']}\nassistant: {m[1]['content']}\ntool: {m[2]['content']}\n"
        f"assistant: {m[3]['content']}"
        for m in map(demonstration, ToolArithmeticTask().expressions(500, seed=seed + 1))
    ]
    tokenizer = build_tokenizer([*builtin_corpus(), *texts])
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    build_tiny_llama(tokenizer, seed=seed).save_pretrained(path)
    save_tokenizer(tokenizer, path)
    return path


def write_data(out: Path, sizes: dict[str, int], seed: int) -> dict[str, str]:
    """The demo's datasets as .jsonl files under ``out/data``."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    train, held = ToolArithmeticTask(), ToolArithmeticTask(split="eval")
    prompts = train.prompt_rows(sizes["problems"], seed)
    rows = {
        "tool_sft": train.sft_rows(sizes["problems"], seed),
        "direct_sft": [{"prompt": r["prompt"], "completion": r["answer"]} for r in prompts],
        "prompts": prompts,
        "eval": held.prompt_rows(sizes["eval"], seed),
        "tool_sft_eval": held.sft_rows(sizes["eval"] // 2, seed),
    }
    paths = {}
    for name, items in rows.items():
        paths[name] = str(data / f"{name}.jsonl")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in items)
    return paths


def stage_configs(out: Path, algo: str, sizes: dict[str, int], data: dict[str, str], seed=0):
    base, common = str(out / "base_model"), {"seed": seed}
    trainer = {"eval_every": 10, "save_every": 50, "keep_checkpoints": 1}
    sft = {"lr": 1e-3, "warmup_steps": 20, "schedule": "cosine"}
    direct = {
        **common,
        "stage": "sft",
        "run_dir": str(out / "direct"),
        "model": {"path": base},
        "data": {"train": data["direct_sft"], "eval": data["eval"]},
        "optim": sft,
        "rollout": {"max_new_tokens": 12},
        "trainer": {**trainer, "eval_every": 50, "steps": sizes["direct"], "batch_size": 64},
    }
    tools = {
        **common,
        "stage": "sft",
        "run_dir": str(out / "sft"),
        "model": {"path": base},
        "data": {"train": data["tool_sft"], "eval": data["tool_sft_eval"]},
        "optim": sft,
        "trainer": {**trainer, "eval_every": 50, "steps": sizes["sft"], "batch_size": 64},
    }
    rl = {
        **common,
        "stage": algo,
        "run_dir": str(out / algo),
        "model": {"path": str(out / "sft" / "policy")},
        "data": {"train": data["prompts"], "eval": data["eval"]},
        "env": {"tools": [TOOL], "max_turns": 3, "max_tokens": 96},
        "rollout": {"max_new_tokens": 48, "samples_per_prompt": 4},
        "optim": {"lr": 5e-5},
        "trainer": {**trainer, "steps": sizes["rl"], "batch_size": 16},
    }
    return {"direct": direct, "sft": tools, algo: rl}


def run_tools_demo(out: Path, algo: str = "grpo", quick: bool = False, seed: int = 0) -> dict:
    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if quick else FULL
    start = time.perf_counter()
    base_model(out, seed)
    data = write_data(out, sizes, seed)
    seconds = {"base_model": time.perf_counter() - start}
    results = {}
    for name, raw in stage_configs(out, algo, sizes, data, seed).items():
        results[name], seconds[name] = run_stage(name, raw, console)
    seconds["total"] = sum(seconds.values())
    rl = _eval_rows(out / algo)
    summary = {
        "task": "tools",
        "algo": algo,
        "accuracy_without_tools": results["direct"].get("eval/accuracy"),
        "accuracy_with_tools_after_sft": rl[0].get("eval/accuracy") if rl else None,
        "accuracy_with_tools_after_rl": results[algo].get("eval/accuracy"),
        "turns_after_rl": results[algo].get("eval/turns"),
        "tool_calls_per_turn_after_rl": results[algo].get("eval/tool_calls_per_turn"),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(console, summary, out)
    from placerl.plotting import plot_run

    plot_run(out)
    return summary


def _eval_rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "eval/accuracy" in row]


def _print_summary(console: Console, summary: dict, out: Path) -> None:
    title = f"placerl demo --task tools ({summary['algo']}) — held-out exact match, greedy"
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")

    def fmt(x):
        return "—" if x is None else f"{x:.3f}"

    table.add_row("accuracy without tools (SFT on answers)", fmt(summary["accuracy_without_tools"]))
    table.add_row("accuracy with tools after SFT", fmt(summary["accuracy_with_tools_after_sft"]))
    rl = f"accuracy with tools after {summary['algo'].upper()}"
    table.add_row(rl, fmt(summary["accuracy_with_tools_after_rl"]))
    for stage, secs in summary["seconds"].items():
        table.add_row(f"seconds: {stage}", f"{secs:.1f}")
    console.print(table)
    console.print(f"summary, metrics, plots and checkpoints under {out}")
