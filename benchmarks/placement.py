"""Placement strategies side by side: PPO and GRPO throughput on this machine's 2 CPU cores.

The same RL stage (the demo's: built-in reversal task, the demo's PPO or GRPO settings,
``placerl.demo.stage_configs``) runs under four placements, one after the other in one
process, for the same steps:

- ``local``: every role in this process, 2 torch threads;
- ``flatten``: 2 Ray workers × 1 thread, every role on both (data parallel, dp = 2);
- ``interleave``: like flatten, but the reference on worker 0 and the reward model on worker 1
  (PPO with a reward model only: with a rule reward and no reference, GRPO's interleave *is*
  flatten, so it is not run);
- ``separate``: the rollout on worker 0, everything else on worker 1, ``max_staleness: 1``
  (worker 0 samples batch k+1 while worker 1 learns on batch k).

PPO needs a reward model for interleave to differ from flatten: an untrained one is made from
the base model (a random scalar head), which costs the same as a trained one. The policy is the
untrained base model, so responses run to ``max_new_tokens``: the same work every step.

Throughput is rows (prompt × sample) per second over the median ``time/step`` of the steps
after ``--warmup``, read back from each run's ``metrics.jsonl``. Starting Ray and the workers
(and loading the models) is left out and printed apart. Per-phase times are medians of the
``time/<phase>`` metrics (the controller's view: under separate the rollout's time is hidden
in ``wait_rollout``). The explanation comes from ``timeline.jsonl``: each worker's busy share
of the measured steps, and how much of the generation time overlapped a model update.

Model and sizes: the demo's 6.1M-parameter Llama (``TinyLlamaSize()``). With the demo's
settings (64 rows per step, ≤8 new tokens) training outweighs generation (PPO about 8:1, GRPO
2:1 on one worker), so separate's training worker is the bottleneck. ``--rows 8 --new-tokens
64`` is where GRPO's generation and training take similar time under separate: at a few rows
decoding is bound by its per-token overhead (halving the rows saves ~5% of it), training by
its rows. ``--rounds n`` alternates the strategies n times; the Separate/Flatten ratio is
also given round by round, since other jobs' load drifts between runs.

    nice -n 19 python benchmarks/placement.py --rounds 2      # the demo's settings, all four
    nice -n 19 python benchmarks/placement.py --algos grpo --rows 8 --new-tokens 64 --rounds 3
    nice -n 19 python benchmarks/placement.py --algos grpo --strategies flatten separate
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import ray  # noqa: E402
import torch  # noqa: E402

import placerl.trainer as trainer  # noqa: E402
from placerl.config.schema import RunConfig  # noqa: E402
from placerl.demo import stage_configs  # noqa: E402
from placerl.logging import read_metrics  # noqa: E402
from placerl.models.factory import TinyLlamaSize, make_model_dir, save_tokenizer  # noqa: E402
from placerl.models.loading import load_reward_model, load_tokenizer  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402

TWO_WORKERS = {"device": "cpu", "num_workers": 2, "threads_per_worker": 1}
STRATEGIES = {
    "local": {"strategy": "local", "device": "cpu"},
    "flatten": {"strategy": "flatten", **TWO_WORKERS},
    "interleave": {"strategy": "interleave", **TWO_WORKERS},
    "separate": {"strategy": "separate", **TWO_WORKERS, "max_staleness": 1},
}
PHASES = (
    "generate",
    "wait_rollout",
    "score",
    "reference",
    "values",
    "old_log_probs",
    "advantages",
    "update",
    "sync",
)


@dataclass
class Result:
    algo: str
    strategy: str
    rows: int  # rows sampled and trained on per step
    startup: list[float] = field(default_factory=list)  # workers + models, per round
    steps: list[float] = field(default_factory=list)  # measured time/step, all rounds
    round_steps: list[float] = field(default_factory=list)  # median time/step of each round
    phases: dict[str, list[float]] = field(default_factory=dict)
    timeline: list[dict] = field(default_factory=list)  # per round (timeline_stats)

    @property
    def step(self) -> float:
        return statistics.median(self.steps)

    @property
    def samples_per_s(self) -> float:
        return self.rows / self.step


# ------------------------------------------------------------------------------ models


def build_models(work: Path, size: TinyLlamaSize) -> tuple[Path, Path]:
    """The base policy (the demo's tokenizer and model factory) and an untrained reward model
    made from it (a random scalar head: the cost of a trained one)."""
    base = make_model_dir(work / "base_model", builtin_corpus(), size, seed=0)
    tokenizer = load_tokenizer(base)
    torch.manual_seed(1)
    reward = load_reward_model(base, tokenizer.pad_token_id)
    path = work / "reward_model"
    reward.save_pretrained(path)
    save_tokenizer(tokenizer, path)
    return base, path


def params_of(model_dir: Path) -> int:
    from placerl.placement.plan.config import count_params

    return count_params(model_dir) or 0


def rl_config(args, algo: str, strategy: str, base: Path, rm: Path, run_dir: Path) -> RunConfig:
    """The demo's RL stage on the base model, with this run's placement and step count."""
    steps = args.warmup + args.steps
    counts = {"sft": 1, "rm": 1, "rl": steps, "rl_critic_free": steps}
    raw = stage_configs(run_dir.parent, algo, counts, seed=0)[algo]
    raw["run_dir"] = str(run_dir)
    raw["model"] = {"path": str(base)}
    if algo == "ppo":
        raw["reward"] = {"model": str(rm)}
    else:  # the untrained policy earns no reward: skipping would leave nothing to train
        raw["grpo"] = {"skip_uninformative": False}
    raw["data"] = {"builtin_size": 4096, "num_eval": 0}
    raw["rollout"]["max_new_tokens"] = args.new_tokens
    if args.rows:  # prompts per step: GRPO samples a group of several per prompt
        raw["trainer"]["batch_size"] = max(1, args.rows // raw["rollout"]["samples_per_prompt"])
    raw["trainer"] |= {"eval_every": 0, "save_every": 0, "progress": False, "report_to": []}
    raw["placement"] = STRATEGIES[strategy]
    return RunConfig.model_validate(raw)


# ------------------------------------------------------------------------------ running


def run_one(args, result: Result, base: Path, rm: Path, work: Path, round_: int) -> None:
    """One training run; its measured steps, phases and timeline go into ``result``."""
    run_dir = work / f"{result.algo}-{result.strategy}-{round_}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resumed one
    cfg = rl_config(args, result.algo, result.strategy, base, rm, run_dir)
    torch.set_num_threads(2 if result.strategy == "local" else 1)  # workers set their own
    startup: list[float] = []
    build = trainer.build_stage

    def timed_build(config):
        start = time.perf_counter()
        stage = build(config)
        startup.append(time.perf_counter() - start)
        return stage

    trainer.build_stage = timed_build  # the stage's setup: Ray workers, model loading
    try:
        trainer.train(cfg)
    finally:
        trainer.build_stage = build
    result.startup += startup
    lines = [m for m in read_metrics(run_dir) if m.get("step", 0) > args.warmup]
    result.steps += [m["time/step"] for m in lines]
    result.round_steps.append(statistics.median(m["time/step"] for m in lines))
    for phase in PHASES:
        values = [m[f"time/{phase}"] for m in lines if f"time/{phase}" in m]
        if values:
            result.phases.setdefault(phase, []).extend(values)
    result.timeline.append(timeline_stats(run_dir, args.warmup, len(lines)))


# ------------------------------------------------------------------------------ timeline


def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total length of the intersection of two merged interval lists."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def timeline_stats(run_dir: Path, warmup: int, steps: int) -> dict:
    """Per worker: busy seconds per step and busy share of the measured steps' wall time,
    by phase; and how long generation overlapped an update (per step). Workers are the Ray
    workers, or the controller itself for the local runtime."""
    spans = [json.loads(line) for line in (run_dir / "timeline.jsonl").read_text().splitlines()]
    measured = [s for s in spans if s["worker"] == "controller" and s["step"] > warmup]
    lo, hi = min(s["start"] for s in measured), max(s["end"] for s in measured)
    remote = [s for s in spans if s["worker"] != "controller"]
    work = [
        (s["worker"], s["phase"], max(s["start"], lo), min(s["end"], hi))
        for s in (remote or [s for s in spans if s["worker"] == "controller"])
        if s["end"] > lo and s["start"] < hi
    ]
    workers: dict[str, dict] = {}
    for name in sorted({w for w, *_ in work}):
        mine = [(p, a, b) for w, p, a, b in work if w == name]
        busy = length(merge([(a, b) for _, a, b in mine]))
        by_phase: dict[str, float] = {}
        for phase, a, b in mine:
            by_phase[phase] = by_phase.get(phase, 0.0) + (b - a) / steps
        workers[name] = {"busy": busy / (hi - lo), "per_step": busy / steps, "phases": by_phase}
    generate = merge([(a, b) for _, p, a, b in work if p.endswith("generate")])
    update = merge([(a, b) for _, p, a, b in work if p.endswith("update")])
    others = merge([(a, b) for _, p, a, b in work if not p.endswith(("generate", "sync"))])
    return {
        "workers": workers,
        "generate": length(generate) / steps,
        "update": length(update) / steps,
        "overlap": intersect(generate, update) / steps,  # sampling while a model trains
        "overlap_any": intersect(generate, others) / steps,  # … or scores, or log-probs
        "wall": (hi - lo) / steps,
    }


# ------------------------------------------------------------------------------ report


def mean_stats(result: Result) -> dict:
    """Timeline stats averaged over rounds (a worker's phases: those of any round)."""
    rounds = result.timeline
    keys = ("generate", "update", "overlap", "overlap_any", "wall")
    out: dict = {k: statistics.mean(t[k] for t in rounds) for k in keys}
    out["workers"] = {}
    for name in rounds[0]["workers"]:
        each = [t["workers"][name] for t in rounds]
        phases = {p for w in each for p in w["phases"]}
        out["workers"][name] = {
            "busy": statistics.mean(w["busy"] for w in each),
            "per_step": statistics.mean(w["per_step"] for w in each),
            "phases": {p: statistics.mean(w["phases"].get(p, 0.0) for w in each) for p in phases},
        }
    return out


def print_tables(algo: str, results: list[Result]) -> None:
    local = next((r for r in results if r.strategy == "local"), results[0])
    print(f"\n{algo.upper()}: {results[0].rows} rows per step")
    print(
        f"| strategy | startup s | step s (median) | samples/s | × {local.strategy} "
        "| gen ∥ update | gen ∥ any other work |\n|---|---|---|---|---|---|---|"
    )
    for r in results:
        t = mean_stats(r)
        gen = max(t["generate"], 1e-9)
        print(
            f"| {r.strategy} | {statistics.median(r.startup):.1f} | {r.step:.3f} "
            f"| {r.samples_per_s:.1f} | {r.samples_per_s / local.samples_per_s:.2f}× "
            f"| {t['overlap'] / gen:.0%} | {t['overlap_any'] / gen:.0%} |"
        )
    flat = next((r for r in results if r.strategy == "flatten"), None)
    sep = next((r for r in results if r.strategy == "separate"), None)
    if flat and sep:  # per round too: runs of one round are nearest in time (other load)
        paired = [f / s for f, s in zip(flat.round_steps, sep.round_steps, strict=True)]
        print(
            f"\nSeparate / Flatten: {sep.samples_per_s / flat.samples_per_s:.2f}× (pooled); "
            f"round by round {', '.join(f'{r:.2f}×' for r in paired)}, "
            f"median {statistics.median(paired):.2f}×"
        )
    shown = [p for p in PHASES if any(p in r.phases for r in results)]
    print("\nper-phase medians on the controller (s):")
    print("| strategy | " + " | ".join(shown) + " | step |")
    print("|---|" + "---|" * (len(shown) + 1))
    for r in results:
        cells = [f"{statistics.median(r.phases[p]):.3f}" if p in r.phases else "–" for p in shown]
        print(f"| {r.strategy} | " + " | ".join(cells) + f" | {r.step:.3f} |")


def print_timeline(results: list[Result]) -> None:
    """Each worker's busy share and its main phases (seconds per step)."""
    print("\nworkers over the measured steps (busy share; seconds per step by phase):")
    for r in results:
        t = mean_stats(r)
        print(f"  {r.strategy}: wall {t['wall']:.3f} s/step")
        for name, w in t["workers"].items():
            top = sorted(w["phases"].items(), key=lambda kv: -kv[1])[:5]
            phases = ", ".join(f"{p} {s:.3f}" for p, s in top)
            print(f"    {name:12s} busy {w['busy']:4.0%} ({w['per_step']:.3f} s): {phases}")


def explain(results: list[Result]) -> None:
    """Why Separate is where it is against Flatten, from the timelines."""
    flat = next((r for r in results if r.strategy == "flatten"), None)
    sep = next((r for r in results if r.strategy == "separate"), None)
    if not (flat and sep):
        return
    f, s = mean_stats(flat), mean_stats(sep)
    gen = next(w for n, w in s["workers"].items() if n.startswith("gen"))
    train = next(w for n, w in s["workers"].items() if n.startswith("train"))
    bound = max(gen["per_step"], train["per_step"])
    flat_busy = statistics.mean(w["per_step"] for w in f["workers"].values())
    print(
        f"\n  separate: the rollout worker is busy {gen['per_step']:.3f} s/step "
        f"({gen['busy']:.0%}), the training worker {train['per_step']:.3f} s/step "
        f"({train['busy']:.0%}); generation overlapped an update "
        f"{s['overlap'] / max(s['generate'], 1e-9):.0%} of its time, any training-side work "
        f"{s['overlap_any'] / max(s['generate'], 1e-9):.0%}. The busier worker sets the pace: "
        f"{bound:.3f} s/step busy (median step {sep.step:.3f} s)."
    )
    print(
        f"  flatten: each worker is busy {flat_busy:.3f} s/step on average (generation "
        f"{f['generate']:.3f} s/step on half the batch each, vs {s['generate']:.3f} s for the "
        f"whole batch on one worker under separate: halving the batch saved "
        f"{1 - f['generate'] / max(s['generate'], 1e-9):.0%} of generation time)."
    )
    ideal = (gen["per_step"] + train["per_step"]) / 2
    print(
        f"  separate's work ({gen['per_step'] + train['per_step']:.3f} worker-s/step) spread "
        f"evenly would take {ideal:.3f} s/step; the imbalance costs "
        f"{bound / max(ideal, 1e-9) - 1:.0%}."
    )


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="placement-bench-"))
    size = replace(
        TinyLlamaSize(),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        intermediate_size=4 * args.hidden,  # the default's ratio
    )
    base, rm = build_models(work, size)
    print(
        f"model: {params_of(base) / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} "
        f"layers), ≤{args.new_tokens} new tokens; {args.warmup} warm-up + {args.steps} measured "
        f"steps × {args.rounds} round(s); niceness {os.nice(0)}; work dir {work}"
    )
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - start:.1f} s (once, not in any figure)")
    try:
        for algo in args.algos:
            results = run_algo(args, algo, base, rm, work)
            print_tables(algo, results)
            print_timeline(results)
            explain(results)
    finally:
        ray.shutdown()


def run_algo(args, algo: str, base: Path, rm: Path, work: Path) -> list[Result]:
    cfg = rl_config(args, algo, "local", base, rm, work / "unused")
    rows = cfg.trainer.batch_size * cfg.rollout.samples_per_prompt
    names = [s for s in args.strategies if not (algo == "grpo" and s == "interleave")]
    results = [Result(algo, name, rows) for name in names]
    for round_ in range(args.rounds):  # rounds alternate the strategies against drift
        for result in results:
            started = time.perf_counter()
            run_one(args, result, base, rm, work, round_)
            print(
                f"  {algo} {result.strategy} round {round_}: {time.perf_counter() - started:.0f} s"
            )
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = TinyLlamaSize()
    parser.add_argument("--algos", nargs="+", default=["ppo", "grpo"], choices=["ppo", "grpo"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--steps", type=int, default=8, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each strategy, alternated")
    parser.add_argument("--hidden", type=int, default=default.hidden_size)
    parser.add_argument("--layers", type=int, default=default.num_hidden_layers)
    parser.add_argument("--new-tokens", type=int, default=8, help="the demo's max_new_tokens")
    parser.add_argument(
        "--rows", type=int, help="rows (prompt × sample) per step; default the demo's 64"
    )
    parser.add_argument("--out", help="work directory (default: a new temporary one)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
