"""placerl's GRPO vs TRL's ``GRPOTrainer``: the same step, side by side in one process.

Both train the same local random-init fp32 Llama on the built-in addition prompts with the
same rule reward (``placerl.tasks.rewards.exact_match_reward``) and the same settings:
``--batch`` prompts × ``--group`` samples per step, at most ``--new-tokens`` new tokens (both
stop at EOS; a random model rarely emits one), temperature 1, no reference model (β = 0),
group-std-scaled advantages, token-mean loss (TRL ``loss_type="dapo"``: Σ token losses /
#tokens of the batch, which is placerl's ``token-mean`` with one minibatch), one optimizer step
per generation batch, AdamW(0.9, 0.95), constant lr, grad clip 1.0, no gradient checkpointing.
TRL keeps its default fused AdamW kernel (``--trl-optim adamw_torch`` gives placerl's kind).
The two trainers run in two threads that take turns (see ``Baton``), so a machine that other
jobs keep busy slows both alike; on such a machine pass ``--threads 1`` (two OpenMP threads
that the scheduler starves wait on each other at every op, which swamps the measurement).

placerl runs through its public API (``load_config`` + ``train``) and its per-step times come
from ``metrics.jsonl``; TRL's come from a ``TrainerCallback`` (wall time between step ends, the
same meaning as placerl's ``time/step``), with its generation and reward calls timed by
wrapping the trainer's ``_generate`` and ``_calculate_rewards``. Warm-up steps are excluded;
medians are reported. The compute bound is the model FLOPs of a step — 2·N per token the
sampler processes plus 6·N per token trained on, N = parameters that multiply (all but the
input embedding table) — over ``--peak`` FLOP/s (148 GFLOP/s fp32 measured on this machine).

    python benchmarks/grpo_vs_trl.py                   # ~34M-parameter Llama, 8 steps
    python benchmarks/grpo_vs_trl.py --small --steps 5 # ~4.3M parameters, quick
    python benchmarks/grpo_vs_trl.py --small --profile # + torch.profiler over 2 placerl steps
    python benchmarks/grpo_vs_trl.py --threads 1       # on a machine busy with other jobs
    python benchmarks/grpo_vs_trl.py --sft-steps 200 --task reversal --lr 1e-5 --steps 12
                                     # from an SFT'd 33.8M policy: the regime RL runs in

Needs ``pip install trl==1.16.0`` (not a placerl dependency). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # TRL 1.16 sets deprecated fields

import torch  # noqa: E402
from baton import Baton  # noqa: E402  (benchmarks/baton.py; scripts run from benchmarks/)
from sft_policy import sft_policy  # noqa: E402

from placerl.config import load_config  # noqa: E402
from placerl.config.schema import RunConfig  # noqa: E402
from placerl.logging import read_metrics  # noqa: E402
from placerl.models.factory import TinyLlamaSize, make_model_dir  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402
from placerl.tasks.addition import AdditionTask  # noqa: E402
from placerl.tasks.reversal import ReversalTask  # noqa: E402
from placerl.tasks.rewards import exact_match_reward  # noqa: E402
from placerl.trainer import train  # noqa: E402

SIZES = {
    "default": TinyLlamaSize(512, 8, 8, 4, intermediate_size=2208),  # 33.8M parameters
    "small": TinyLlamaSize(256, 4, 8, 4, intermediate_size=1088),  # 4.3M parameters
}
ADAM_BETAS = (0.9, 0.95)  # placerl's default; TRL is given the same


# --- setup -----------------------------------------------------------------------------------


def model_dir(args: argparse.Namespace, work: Path) -> Path:
    if args.model:
        return Path(args.model)
    size = "small" if args.small else "default"
    base = work / f"model-{size}"
    if not (base / "config.json").exists():
        make_model_dir(base, builtin_corpus(), SIZES[size], seed=0)
    if args.sft_steps:
        return sft_policy(base, work, args.task, args.sft_steps, seed=args.seed)
    return base


def prompt_rows(args: argparse.Namespace) -> list[dict]:
    n = max(256, 4 * args.steps * args.batch)
    task = AdditionTask() if args.task == "addition" else ReversalTask()
    return task.prompt_rows(n, seed=args.seed)


def count_params(path: Path) -> tuple[int, int]:
    """(all parameters, parameters that take part in matmuls: all but the input embedding)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    total = sum(p.numel() for p in model.parameters())
    return total, total - model.get_input_embeddings().weight.numel()


def mean_prompt_tokens(path: Path, rows: list[dict]) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return statistics.mean(len(tok(r["prompt"])["input_ids"]) for r in rows)


# --- taking turns ----------------------------------------------------------------------------


_BATON = Baton(["placerl"])  # replaced by main()


def digit_share_reward(completions: list[str], **_: object) -> list[float]:
    """Share of a completion's characters that are digits: a reward a random model already
    gets varied scores on, so every group carries signal and every sample is trained on."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


REWARDS = {"exact": exact_match_reward, "digits": digit_share_reward}
_REWARD = [exact_match_reward]  # replaced by main()


def placerl_reward(completions: list[str], answer: list[str], **_: object) -> list[float]:
    """placerl calls ``fn(completions=, prompts=, **dataset_columns)``."""
    _BATON.hand_over("placerl")
    return _REWARD[0](completions, answer=answer)


def trl_reward(completions: list[str], answer: list[str], **_: object) -> list[float]:
    """TRL calls ``fn(prompts=, completions=, completion_ids=, trainer_state=, log_extra=, ...,
    **dataset_columns)``; completions are strings for plain-text prompts."""
    _BATON.hand_over("TRL")
    return _REWARD[0](completions, answer=answer)


def less_waits(rows: list[dict], waits: list[float]) -> list[dict]:
    """Per-step records with the turn-taking waits taken out of ``step`` and ``score``."""
    for row, wait in zip(rows, waits):
        row["step"] -= wait
        row["score"] -= wait
    return rows


# --- placerl ---------------------------------------------------------------------------------


def placerl_config(args, path: Path, prompts: Path, run_dir: Path, steps: int) -> RunConfig:
    overrides = [
        "stage=grpo",
        f"run_dir={run_dir}",
        f"seed={args.seed}",
        f"model.path={path}",
        "model.precision=fp32",
        f"data.train={prompts}",
        "data.num_eval=0",
        "data.max_prompt_len=64",
        f"rollout.max_new_tokens={args.new_tokens}",
        f"rollout.samples_per_prompt={args.group}",
        "rollout.temperature=1.0",
        f"trainer.batch_size={args.batch}",
        f"trainer.steps={steps}",
        "trainer.progress=false",
        "trainer.report_to=[]",
        "trainer.save_every=0",
        "grpo.kl_coef=0",
        "grpo.loss_agg=token-mean",
        "grpo.scale_by_std=true",
        f"optim.lr={args.lr}",
        f"optim.betas=[{ADAM_BETAS[0]}, {ADAM_BETAS[1]}]",
        "optim.schedule=constant",
        "optim.grad_clip=1.0",
        f"reward.function={__name__}:placerl_reward",
    ]
    return load_config(None, overrides, RunConfig)


def run_placerl(args, path: Path, prompts: Path, work: Path) -> list[dict]:
    """Per-step records: step, gen, score, update (seconds), reward, length."""
    run_dir = work / "placerl-run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a scratch run: never resumed
    train(placerl_config(args, path, prompts, run_dir, args.steps))
    records = [r for r in read_metrics(run_dir) if "time/step" in r]
    rows = [
        {
            "step": r["time/step"],
            "gen": r.get("time/generate", 0.0),
            "score": r.get("time/score", 0.0),
            "update": r.get("time/update", 0.0),
            "reward": r["reward/mean"],
            "length": r["response/length"],
        }
        for r in records
    ]
    return less_waits(rows, _BATON.waits["placerl"])


# --- TRL -------------------------------------------------------------------------------------


def trl_config(args, work: Path):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(work / "trl-run"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch * args.group,  # counts completions
        gradient_accumulation_steps=1,
        num_generations=args.group,
        steps_per_generation=1,  # one generation batch (= one optimizer step) per step
        num_iterations=1,
        max_completion_length=args.new_tokens,
        temperature=1.0,
        beta=0.0,
        loss_type="dapo",
        scale_rewards="group",
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        adam_beta1=ADAM_BETAS[0],
        adam_beta2=ADAM_BETAS[1],
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim=args.trl_optim,  # TRL's default is fused AdamW; placerl's is torch's for-loop one
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        use_vllm=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
    )


def run_trl(args, path: Path, rows: list[dict], work: Path) -> list[dict]:
    """Per-step records like ``run_placerl``'s; ``update`` is the step less gen and score."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        reward_funcs=trl_reward,
        args=trl_config(args, work),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(path),
    )
    trainer.remove_callback(PrinterCallback)
    times: dict[int, dict[str, float]] = {}
    phase = _PhaseClock()
    trainer._generate = phase.wrap("gen", trainer._generate)
    trainer._calculate_rewards = phase.wrap("score", trainer._calculate_rewards)

    class StepClock(TrainerCallback):
        last = 0.0

        def on_train_begin(self, args_, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            now = time.perf_counter()
            times.setdefault(state.global_step, {}).update(step=now - self.last, **phase.pop())
            self.last = now

        def on_log(self, args_, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                times.setdefault(state.global_step, {}).update(
                    reward=logs["reward"], length=logs["completions/mean_length"]
                )

    trainer.add_callback(StepClock())
    trainer.train()
    out = less_waits([times[s] for s in sorted(times)], _BATON.waits["TRL"])
    for row in out:
        row["update"] = row["step"] - row.get("gen", 0.0) - row.get("score", 0.0)
    return out


class _PhaseClock:
    """Wall seconds spent in wrapped methods since the last ``pop``."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start

        return timed

    def pop(self) -> dict[str, float]:
        out, self.totals = self.totals, {}
        return out


def side_by_side(runs: dict) -> dict[str, list[dict]]:
    """Run each ``name -> fn()`` in its own thread, taking turns through the baton."""
    global _BATON
    _BATON = Baton(list(runs))
    results: dict[str, list[dict]] = {}
    errors: list[BaseException] = []

    threads = torch.get_num_threads()

    def worker(name: str, fn) -> None:
        try:
            torch.set_num_threads(threads)
            _BATON.wait_turn(name)
            results[name] = fn()
        except BaseException as err:  # re-raised in the main thread
            errors.append(err)
        finally:
            _BATON.finish(name)

    workers = [threading.Thread(target=worker, args=item) for item in runs.items()]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    return results


# --- profile ---------------------------------------------------------------------------------


def profile_placerl(args, path: Path, prompts: Path, work: Path) -> None:
    """torch.profiler over 2 placerl steps (after 1 warm-up); phases appear as ``phase:*``."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from placerl.stages import build_stage
    from placerl.timing import PhaseTimer
    from placerl.trainer import seed_everything

    class ProfiledTimer(PhaseTimer):
        @contextlib.contextmanager
        def phase(self, name: str) -> Iterator[None]:
            with record_function(f"phase:{name}"), super().phase(name):
                yield

    global _BATON
    _BATON = Baton(["placerl"])  # alone: hand_over returns at once
    cfg = placerl_config(args, path, prompts, work / "placerl-profile", steps=3)
    seed_everything(cfg.seed)
    stage = build_stage(cfg)
    timer = ProfiledTimer()
    stage.step(0, timer)
    timer.pop()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in (1, 2):
            stage.step(i, timer)
    averages = prof.key_averages()
    print("\nplacerl, torch.profiler over 2 steps: top 15 ops by self CPU time")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=15))
    total = sum(e.self_cpu_time_total for e in averages) / 1e6
    print(f"total self CPU time {total:.2f} s (profiler overhead included); phases:")
    for e in sorted(averages, key=lambda e: -e.cpu_time_total):
        if e.key.startswith("phase:"):
            print(f"  {e.key:<20}{e.cpu_time_total / 1e6 / 2:>8.3f} s/step")


# --- report ----------------------------------------------------------------------------------


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in rows)


def bound_seconds(n_mm: int, prompt_tok: float, resp_tok: float, args) -> float:
    """Model FLOPs of one step over the peak: sampling 2·N per processed token, update 6·N."""
    seqs = args.batch * args.group
    tokens = seqs * (prompt_tok + resp_tok)
    return (2 * n_mm * tokens + 6 * n_mm * tokens) / args.peak


def report(args, n_params: int, n_mm: int, prompt_tok: float, sides: dict[str, list]) -> None:
    names = list(sides)
    steps = min(len(rows) for rows in sides.values())
    print(
        f"\nper step: seconds (turn-taking waits taken out) and reward mean; steps 1..{args.warmup} are warm-up"
    )
    print("step" + "".join(f"{n + ' s':>12}{n + ' reward':>16}" for n in names))
    for i in range(steps):
        cells = "".join(
            f"{sides[n][i]['step']:>12.3f}{sides[n][i]['reward']:>16.4f}" for n in names
        )
        print(f"{i + 1:>4}{cells}")
    print(f"\nmedian over steps {args.warmup + 1}..{steps}")
    print(
        f"{'':<9}{'step s':>8}{'gen s':>8}{'score s':>9}{'update s':>10}{'other s':>9}"
        f"{'resp len':>10}{'reward':>9}{'bound s':>9}{'bound/step':>12}"
    )
    medians = {}
    for name in names:
        rows = sides[name][args.warmup : steps]
        step, gen, score = median(rows, "step"), median(rows, "gen"), median(rows, "score")
        update = median(rows, "update")
        # TRL's update is its step less gen and score, so it has no separate remainder
        residual = [{"o": r["step"] - r["gen"] - r["score"] - r["update"]} for r in rows]
        other = f"{median(residual, 'o'):>9.3f}" if name == "placerl" else f"{'-':>9}"
        length = statistics.mean(r["length"] for r in rows)
        reward = statistics.mean(r["reward"] for r in rows)
        bound = bound_seconds(n_mm, prompt_tok, length, args)
        medians[name] = step
        print(
            f"{name:<9}{step:>8.3f}{gen:>8.3f}{score:>9.4f}{update:>10.3f}"
            f"{other}{length:>10.1f}{reward:>9.4f}{bound:>9.3f}"
            f"{100 * bound / step:>11.1f}%"
        )
    if len(names) == 2:
        print(f"\nTRL / placerl median step time: {medians['TRL'] / medians['placerl']:.2f}x")
    print(
        f"reward mean over all {steps} steps: "
        + ", ".join(
            f"{n} {statistics.mean(r['reward'] for r in sides[n][:steps]):.4f}" for n in names
        )
    )
    print(
        f"TRL update = its step less gen and score (forward/backward/optimizer + overhead); "
        f"other = placerl's step less its phases.\nbound: (2+6)·N·tokens / {args.peak / 1e9:.0f} GFLOP/s, "
        f"N = {n_mm / 1e6:.2f}M matmul params ({n_params / 1e6:.2f}M in all), tokens = "
        f"{args.batch * args.group} × ({prompt_tok:.1f} prompt + mean response length)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="local model dir (default: build a random-init Llama)")
    parser.add_argument(
        "--small", action="store_true", help="4.3M-parameter model (h256, 4 layers)"
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--sft-steps",
        type=int,
        default=0,
        help="first SFT the model on --task for this many steps (benchmarks/sft_policy.py; "
        "cached in --workdir): the regime RL runs in, responses ending at EOS",
    )
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of medians")
    parser.add_argument("--batch", type=int, default=8, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--task",
        choices=["addition", "reversal"],
        default="addition",
        help="built-in prompts (reversal: the demo's task, e.g. for its SFT policy via --model)",
    )
    parser.add_argument(
        "--reward",
        choices=sorted(REWARDS),
        default="exact",
        help="exact: exact-match (a random model scores 0, so GRPO has no signal and placerl "
        "skips the update); digits: share of digit characters (signal in every group)",
    )
    parser.add_argument(
        "--peak", type=float, default=148e9, help="fp32 matmul FLOP/s of all cores together"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch default); use 1 when other jobs keep the cores busy",
    )
    parser.add_argument(
        "--trl-optim",
        default="adamw_torch_fused",
        help="TRL optimizer: its default adamw_torch_fused, or adamw_torch (placerl's kind)",
    )
    parser.add_argument("--only", choices=["placerl", "trl"], help="run just one side")
    parser.add_argument("--profile", action="store_true", help="profile 2 placerl steps too")
    parser.add_argument("--workdir", help="keep model and runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _REWARD[0] = REWARDS[args.reward]
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    if args.threads:
        torch.set_num_threads(args.threads)
    # the bound uses the share of the machine's peak that the torch threads can reach
    cores = os.cpu_count() or 1
    args.peak *= min(torch.get_num_threads(), cores) / cores
    with contextlib.ExitStack() as stack:
        if args.workdir:
            work = Path(args.workdir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grpo_vs_trl-")))
        path = model_dir(args, work)
        rows = prompt_rows(args)
        prompts = work / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
        n_params, n_mm = count_params(path)
        prompt_tok = mean_prompt_tokens(path, rows)
        print(
            f"GRPO, Llama {n_params / 1e6:.2f}M params fp32 | {args.batch} prompts × {args.group} "
            f"samples | ≤{args.new_tokens} new tokens | lr {args.lr:g} | {args.steps} steps | "
            f"{torch.get_num_threads()} threads | reward {args.reward}"
        )
        runs = {
            "placerl": lambda: run_placerl(args, path, prompts, work),
            "TRL": lambda: run_trl(args, path, rows, work),
        }
        if args.only:
            runs = {k: v for k, v in runs.items() if k.lower() == args.only}
        report(args, n_params, n_mm, prompt_tok, side_by_side(runs))
        if args.profile:
            profile_placerl(args, path, prompts, work)


if __name__ == "__main__":
    main()
