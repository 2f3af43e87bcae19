"""``placerl demo``: InstructGPT's pipeline in miniature on the built-in task (digit reversal).

base model → SFT on noisy demonstrations → reward model on comparisons → RL (PPO with four
models, or GRPO/RLOO with the rule reward) → held-out accuracy before and after. Each stage is
an ordinary ``train`` run in its own directory under ``--out``; a stage that finished is
reused when the demo is run again, one that was interrupted resumes from its checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from placerl.config.schema import RunConfig
from placerl.models.factory import make_model_dir
from placerl.stages.sources import builtin_corpus
from placerl.trainer import train

DONE = "stage_done.json"

# Step counts and learning rates measured to fit 10 minutes on 2 CPU cores (see README).
FULL = {"sft": 200, "rm": 150, "rl": 60, "rl_critic_free": 150}  # grpo/rloo steps are ~6x cheaper
QUICK = {"sft": 3, "rm": 3, "rl": 3, "rl_critic_free": 3}


def stage_configs(
    out: Path, algo: str, steps: dict[str, int], seed: int = 0, quick: bool = False
) -> dict[str, dict]:
    base, common = str(out / "base_model"), {"seed": seed}
    if quick:  # a smoke test: little data, few eval prompts
        common["data"] = {"builtin_size": 256, "num_eval": 16}
    trainer = {"eval_every": 20, "save_every": 50, "keep_checkpoints": 1}
    sft = {
        **common,
        "stage": "sft",
        "run_dir": str(out / "sft"),
        "model": {"path": base},
        "optim": {"lr": 1e-3, "warmup_steps": 20, "schedule": "cosine"},
        "rollout": {"max_new_tokens": 8},
        "trainer": {**trainer, "steps": steps["sft"], "batch_size": 64},
    }
    policy = str(out / "sft" / "policy")
    rm = {
        **common,
        "stage": "rm",
        "run_dir": str(out / "rm"),
        "model": {"path": policy},
        "optim": {"lr": 3e-4, "warmup_steps": 10, "schedule": "cosine"},
        "trainer": {**trainer, "steps": steps["rm"], "batch_size": 32},
    }
    rl = {
        **common,
        "stage": algo,
        "run_dir": str(out / algo),
        "model": {"path": policy},
        "rollout": {"max_new_tokens": 8, "samples_per_prompt": 1 if algo == "ppo" else 4},
        "trainer": {
            **trainer,
            "steps": steps["rl"] if algo == "ppo" else steps["rl_critic_free"],
            "batch_size": 64 if algo == "ppo" else 16,
        },
    }
    if algo == "ppo":
        rl["reward"] = {"model": str(out / "rm" / "reward_model")}
        rl["optim"] = {"lr": 2e-5}
        rl["ppo"] = {"kl_coef": 0.05, "critic_lr": 1e-4, "epochs": 1, "minibatches": 2}
    else:
        rl["optim"] = {"lr": 2e-5}
    return {"sft": sft, "rm": rm, algo: rl} if algo == "ppo" else {"sft": sft, algo: rl}


def run_stage(name: str, raw: dict, console: Console) -> tuple[dict, float]:
    """Train one stage, or reuse it if a previous demo run finished it."""
    cfg = RunConfig.model_validate(raw)
    done = Path(cfg.run_dir) / DONE
    if done.exists():
        record = json.loads(done.read_text())
        console.print(f"[dim]{name}: reusing the finished stage in {cfg.run_dir}[/dim]")
        return record["metrics"], record["seconds"]
    console.rule(f"{name}")
    start = time.perf_counter()
    metrics = train(cfg, resume=True, console=console)
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"metrics": metrics, "seconds": seconds}))
    return metrics, seconds


def run_demo(out: Path, algo: str = "ppo", quick: bool = False, seed: int = 0) -> dict:
    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if not (out / "base_model" / "config.json").exists():
        make_model_dir(out / "base_model", builtin_corpus(), seed=seed)
    seconds["base_model"] = time.perf_counter() - start

    results = {}
    for name, raw in stage_configs(out, algo, QUICK if quick else FULL, seed, quick).items():
        results[name], seconds[name] = run_stage(name, raw, console)
    seconds["total"] = sum(seconds.values())

    summary = {
        "algo": algo,
        "sft_accuracy": results["sft"].get("eval/accuracy"),
        "final_accuracy": results[algo].get("eval/accuracy"),
        "reward_model_accuracy": results.get("rm", {}).get("eval/pairwise_accuracy"),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(console, summary, out)
    from placerl.plotting import plot_run

    plot_run(out)
    return summary


def _print_summary(console: Console, summary: dict, out: Path) -> None:
    table = Table(title=f"placerl demo ({summary['algo']}) — held-out exact match, greedy answers")
    table.add_column("measure")
    table.add_column("value", justify="right")

    def fmt(x):
        return "—" if x is None else f"{x:.3f}"

    table.add_row("accuracy after SFT", fmt(summary["sft_accuracy"]))
    table.add_row("reward model pairwise accuracy", fmt(summary["reward_model_accuracy"]))
    table.add_row(f"accuracy after {summary['algo'].upper()}", fmt(summary["final_accuracy"]))
    for stage, secs in summary["seconds"].items():
        table.add_row(f"seconds: {stage}", f"{secs:.1f}")
    console.print(table)
    console.print(f"summary, metrics, plots and checkpoints under {out}")
