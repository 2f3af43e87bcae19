"""placerl's DPO step vs TRL's ``DPOTrainer``: the same step, side by side in one process.

Both train the same local random-init Llama on the same preference pairs with the same
settings: ``--batch`` pairs per step, sigmoid (DPO) loss with β = 0.1, summed response
log-probs, AdamW (0.9, 0.95) — fused for both (placerl's ``make_optimizer`` and TRL's default
``adamw_torch_fused``) — constant lr, grad clip 1.0, no gradient checkpointing, fp32 unless
``--bf16`` (bf16 autocast for both). The pairs are digit reversals of 10 to 44 digits (chosen:
the reversal, rejected: a copy), so sequences vary in length like real preference data.

The reference model is handled two ways, and both are measured (``--reference`` picks one):

- ``online``: the frozen reference scores every batch (placerl ``preference.reference:
  online``; TRL ``precompute_ref_log_probs=False``, its default);
- ``cached``: reference log-probs computed once per pair (placerl ``cached``: the first time a
  pair is met, inside the step; TRL ``precompute_ref_log_probs=True``: one pass over the dataset
  before training, outside the steps). For steady-state steps to be comparable, the dataset
  has ``--batch × --warmup`` pairs, so placerl's cache is full by the end of warm-up; the
  one-off reference cost of each is printed separately.

The two trainers run in two threads that take turns after every step (see ``Baton``), so a
machine that other jobs keep busy slows both alike; the turn-taking waits are subtracted. On
such a machine pass ``--threads 1``. placerl's step is ``stage.step`` of the ``dpo`` stage
(what ``placerl train`` calls each step); TRL's is the wall time between ``on_step_end``
callbacks (data collation, forward, backward, optimizer). Medians after ``--warmup`` steps.
"tokens/pair" counts the real tokens fed to the policy per pair (placerl feeds each prompt once
for both responses, TRL twice); "padding" is the share of pad slots in the policy's batch.

    python benchmarks/dpo_vs_trl.py                      # ~34M-parameter Llama, both modes
    python benchmarks/dpo_vs_trl.py --small --steps 6    # ~4.3M parameters, quick
    python benchmarks/dpo_vs_trl.py --threads 1 --reference cached

Needs ``pip install trl==1.16.0`` (not a placerl dependency). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # TRL 1.16 sets deprecated fields

import torch  # noqa: E402
from baton import Baton  # noqa: E402  (benchmarks/baton.py; scripts run from benchmarks/)

from placerl.config import load_config  # noqa: E402
from placerl.config.schema import RunConfig  # noqa: E402
from placerl.models.factory import TinyLlamaSize, make_model_dir  # noqa: E402
from placerl.stages import build_stage  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402
from placerl.timing import PhaseTimer  # noqa: E402
from placerl.trainer import seed_everything  # noqa: E402

SIZES = {
    "default": TinyLlamaSize(512, 8, 8, 4, intermediate_size=2208),  # 33.8M parameters
    "small": TinyLlamaSize(256, 4, 8, 4, intermediate_size=1088),  # 4.3M parameters
}
ADAM_BETAS = (0.9, 0.95)
MAX_LEN = 256  # longer than any pair here: neither side truncates


# --- setup -----------------------------------------------------------------------------------


def model_dir(args: argparse.Namespace, work: Path) -> Path:
    if args.model:
        return Path(args.model)
    size = "small" if args.small else "default"
    return make_model_dir(work / f"model-{size}", builtin_corpus(), SIZES[size], seed=0)


def pair_rows(n: int, seed: int) -> list[dict]:
    """Reversal pairs of 10–44 digits: about 59 tokens per sequence, lengths spread."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(10, 44)))
        rows.append({"prompt": f"rev {digits}=", "chosen": digits[::-1], "rejected": digits})
    return rows


def count_params(path: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return sum(p.numel() for p in model.parameters())


# --- placerl ---------------------------------------------------------------------------------


def run_placerl(args, path: Path, data: Path, work: Path, mode: str, baton: Baton) -> dict:
    overrides = [
        "stage=dpo",
        f"run_dir={work / f'placerl-{mode}'}",
        f"seed={args.seed}",
        f"model.path={path}",
        f"model.precision={'bf16' if args.bf16 else 'fp32'}",
        f"data.train={data}",
        "data.num_eval=0",
        f"data.max_len={MAX_LEN}",
        "preference.loss=dpo",
        "preference.beta=0.1",
        f"preference.reference={mode}",
        f"trainer.batch_size={args.batch}",
        f"trainer.steps={args.steps}",
        f"optim.lr={args.lr}",
        f"optim.betas=[{ADAM_BETAS[0]}, {ADAM_BETAS[1]}]",
        "optim.schedule=constant",
        "optim.grad_clip=1.0",
    ]
    seed_everything(args.seed)
    stage = build_stage(load_config(None, overrides, RunConfig))
    steps, reference, tokens, slots = [], 0.0, [], []
    timer = PhaseTimer()
    for i in range(args.steps):
        start = time.perf_counter()
        metrics = stage.step(i, timer)
        steps.append(time.perf_counter() - start)
        reference += timer.pop().get("time/reference", 0.0)
        tokens.append(metrics["throughput/tokens"])
        slots.append(metrics["throughput/tokens"] / (1 - metrics["data/padding"]))
        baton.hand_over("placerl")
    return {"steps": steps, "reference_total": reference, "tokens": tokens, "slots": slots}


# --- TRL -------------------------------------------------------------------------------------


def trl_config(args, work: Path, mode: str):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(work / f"trl-{mode}"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,  # counts pairs
        gradient_accumulation_steps=1,
        loss_type=["sigmoid"],
        beta=0.1,
        max_length=MAX_LEN,
        precompute_ref_log_probs=mode == "cached",
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        adam_beta1=ADAM_BETAS[0],
        adam_beta2=ADAM_BETAS[1],
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        gradient_checkpointing=False,
        bf16=args.bf16,
        use_cpu=True,
        report_to="none",
        logging_steps=10_000,  # no per-step logging work inside the timed steps
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )


def run_trl(args, path: Path, rows: list[dict], work: Path, mode: str, baton: Baton) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    precompute = {"seconds": 0.0}
    original = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *a, **kw):
        start = time.perf_counter()
        try:
            return original(self, *a, **kw)
        finally:
            precompute["seconds"] += time.perf_counter() - start

    DPOTrainer._precompute_ref_logps = timed_precompute
    try:
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
            args=trl_config(args, work, mode),
            train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(path),
        )
    finally:
        DPOTrainer._precompute_ref_logps = original
    trainer.remove_callback(PrinterCallback)
    tokens, slots = [], []
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        tokens.append(int(batch["attention_mask"].sum()))
        slots.append(batch["attention_mask"].numel())
        return batch

    trainer.data_collator = counting_collator
    steps: list[float] = []

    class StepClock(TrainerCallback):
        last = 0.0

        def on_train_begin(self, args_, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            steps.append(time.perf_counter() - self.last)
            baton.hand_over("TRL")
            self.last = time.perf_counter()  # the wait for the turn is not TRL's time

    trainer.add_callback(StepClock())
    trainer.train()
    return {
        "steps": steps,
        "reference_total": precompute["seconds"],
        "tokens": tokens[: len(steps)],
        "slots": slots[: len(steps)],
    }


def side_by_side(runs: dict) -> dict[str, dict]:
    """Run each ``name -> fn(baton)`` in its own thread, one step each in turn."""
    baton = Baton(list(runs))
    results: dict[str, dict] = {}
    errors: list[BaseException] = []
    threads = torch.get_num_threads()

    def worker(name: str, fn) -> None:
        try:
            torch.set_num_threads(threads)
            baton.wait_turn(name)
            results[name] = fn(baton)
        except BaseException as err:  # re-raised in the main thread
            errors.append(err)
        finally:
            baton.finish(name)

    workers = [threading.Thread(target=worker, args=item) for item in runs.items()]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    return results


# --- report ----------------------------------------------------------------------------------


def report(args, mode: str, sides: dict[str, dict]) -> float | None:
    names = list(sides)
    n = min(len(s["steps"]) for s in sides.values())
    print(f"\nreference: {mode} — seconds per step (steps 1..{args.warmup} are warm-up)")
    print("step" + "".join(f"{name:>12}" for name in names))
    for i in range(n):
        print(f"{i + 1:>4}" + "".join(f"{sides[name]['steps'][i]:>12.3f}" for name in names))
    medians = {}
    print(
        f"{'':<9}{'median s':>10}{'pairs/s':>9}{'tokens/pair':>13}{'padding':>9}"
        f"{'one-off reference s':>21}"
    )
    for name in names:
        side = sides[name]
        rows = range(args.warmup, n)
        median = statistics.median(side["steps"][i] for i in rows)
        tokens = statistics.mean(side["tokens"][i] for i in rows)
        slots = statistics.mean(side["slots"][i] for i in rows)
        medians[name] = median
        where = "in steps 1.." if name == "placerl" else "before step 1"
        one_off = f"{side['reference_total']:>9.2f} ({where})" if mode == "cached" else f"{'-':>21}"
        print(
            f"{name:<9}{median:>10.3f}{args.batch / median:>9.2f}{tokens / args.batch:>13.1f}"
            f"{1 - tokens / slots:>8.0%} {one_off}"
        )
    if len(names) == 2:
        ratio = medians["TRL"] / medians["placerl"]
        print(f"TRL / placerl median step time ({mode} reference): {ratio:.2f}x")
        return ratio
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="local model dir (default: build a random-init Llama)")
    parser.add_argument("--small", action="store_true", help="4.3M-parameter model")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of medians")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both")
    parser.add_argument(
        "--reference", choices=["online", "cached", "both"], default="both", help="see above"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--only", choices=["placerl", "trl"], help="run just one side")
    parser.add_argument("--workdir", help="keep model and runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = ["online", "cached"] if args.reference == "both" else [args.reference]
    with contextlib.ExitStack() as stack:
        if args.workdir:
            work = Path(args.workdir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dpo_vs_trl-")))
        path = model_dir(args, work)
        print(
            f"DPO, Llama {count_params(path) / 1e6:.1f}M params "
            f"{'bf16 autocast' if args.bf16 else 'fp32'} | {args.batch} pairs/step | "
            f"{args.steps} steps | {torch.get_num_threads()} threads"
        )
        ratios = {}
        for mode in modes:
            # cached: warm-up steps cover one epoch, so placerl's cache is full after them
            n = args.batch * (args.warmup if mode == "cached" else args.steps)
            rows = pair_rows(n, args.seed)
            data = work / f"pairs-{mode}.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in rows))
            runs = {
                "placerl": lambda b, m=mode, d=data: run_placerl(args, path, d, work, m, b),
                "TRL": lambda b, m=mode, r=rows: run_trl(args, path, r, work, m, b),
            }
            if args.only:
                runs = {k: v for k, v in runs.items() if k.lower() == args.only}
            ratios[mode] = report(args, mode, side_by_side(runs))
        if len(ratios) == 2 and None not in ratios.values():
            print(
                "\nTRL / placerl: "
                + ", ".join(f"{mode} reference {r:.2f}x" for mode, r in ratios.items())
            )


if __name__ == "__main__":
    main()
