"""Peak memory of one GRPO update and one DPO step on a Qwen2-shaped model with a 152k vocabulary.

    python benchmarks/memory.py                 # after (this tree) vs before (git main)
    python benchmarks/memory.py --before none   # this tree only
    python benchmarks/memory.py --before /path/to/a/checkout/of/main

Each measurement runs in a fresh subprocess: the model (transformers ``Qwen2Config``, 151,936
tokens, tied embeddings, hidden size 64 so a CPU does it in a minute or two) and its optimizer
are built, then the peak is reset and one step runs — GRPO: the actor update of one batch of
prompt groups; DPO: the reference log-probs of the batch and the policy step. On CPU the
peak is the process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``); on a GPU
``torch.cuda.max_memory_allocated``. ``step`` is the peak minus what the process held before
the step (weights, optimizer state, the batch): the memory the step itself needs.

"before" is the code of another checkout (default: ``git archive main`` into a temporary
directory), run with the same script: one forward per minibatch with full (B, T, V) logits,
the entropy over them on every update. "after" is this tree with ``trainer.micro_batch_size``
at each of two values. Figures, never assertions (benchmarks/README.md has the table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOCAB, PROMPT, RESPONSE, GROUP = 151_936, 16, 48, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="main", help="a git ref, a directory, or 'none'")
    parser.add_argument("--batches", default="8,16,32", help="sequences per step (GRPO, DPO)")
    parser.add_argument("--micro", default="2,4", help="trainer.micro_batch_size values")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    batches = [int(b) for b in args.batches.split(",")]
    micros = [int(m) for m in args.micro.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        before = _before_tree(args.before, Path(tmp))
        rows = []
        for algo in ("grpo", "dpo"):
            for batch in batches:
                old = _run(before, algo, batch, None) if before else None
                for micro in micros:
                    rows.append((algo, batch, micro, old, _run(ROOT, algo, batch, micro)))
    print(table(rows))


def _before_tree(spec: str, tmp: Path) -> Path | None:
    if spec == "none":
        return None
    if Path(spec).is_dir():
        return Path(spec)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", spec], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    return tmp


def _run(tree: Path, algo: str, batch: int, micro: int | None) -> dict:
    env = dict(
        os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")
    )
    spec = json.dumps({"algo": algo, "batch": batch, "micro": micro})
    out = subprocess.run(
        [sys.executable, __file__, "--child", spec],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"{algo} batch={batch} micro={micro or 'all'} ({tree.name}): {result}", file=sys.stderr)
    return result


# ---------------------------------------------------------------------------------- child


def measure(algo: str, batch: int, micro: int | None) -> dict:
    import torch

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step = _grpo(batch, micro, device) if algo == "grpo" else _dpo(batch, micro, device)
    held = _current(device)
    _reset_peak(device)
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    peak = _peak(device)
    return {
        "peak_mb": peak,
        "step_mb": peak - held,
        "seconds": round(seconds, 2),
        "device": device.type,
    }


def _model(device):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).to(device)


def _grpo(batch: int, micro: int | None, device):
    import torch
    from tensordict import TensorDict

    from placerl.algos.objectives import PolicyObjective
    from placerl.config.schema import OptimConfig
    from placerl.roles.actor import ActorWorker
    from placerl.types import Field

    extra = {}
    if micro is not None:
        from placerl.models.micro_batches import MicroBatching

        extra["micro_batching"] = MicroBatching(rows=micro)
    actor = ActorWorker(_model(device), OptimConfig(lr=1e-6), 10, **extra)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, VOCAB, (batch // GROUP, PROMPT), generator=g)
    prompt_ids = prompts.repeat_interleave(GROUP, 0)
    lengths = torch.randint(RESPONSE // 2, RESPONSE + 1, (batch,), generator=g)
    lengths[0] = RESPONSE
    response_mask = (torch.arange(RESPONSE) < lengths[:, None]).long()
    response_ids = torch.randint(3, VOCAB, (batch, RESPONSE), generator=g) * response_mask
    advantages = torch.randn(batch, 1, generator=g) * response_mask
    fields = {
        Field.PROMPT_IDS: prompt_ids,
        Field.PROMPT_MASK: torch.ones_like(prompt_ids),
        Field.RESPONSE_IDS: response_ids,
        Field.RESPONSE_MASK: response_mask,
        Field.INPUT_IDS: torch.cat([prompt_ids, response_ids], 1),
        Field.ATTENTION_MASK: torch.cat([torch.ones_like(prompt_ids), response_mask], 1),
        Field.OLD_LOG_PROBS: torch.full((batch, RESPONSE), -12.0),
        Field.ADVANTAGES: advantages.float(),
    }
    data = TensorDict(fields, batch_size=[batch]).to(device)
    objective = PolicyObjective(loss_agg="token-mean")
    return lambda: actor.update(data, objective)


def _dpo(batch: int, micro: int | None, device):
    import torch

    from placerl.algos.dpo import EncodedPair, OfflinePreference
    from placerl.config.preference import PreferenceConfig
    from placerl.config.schema import OptimConfig
    from placerl.models.training import make_optimizer

    model, reference = _model(device), _model(device).eval().requires_grad_(False)
    extra = {}
    if micro is not None:
        from placerl.models.micro_batches import MicroBatching

        extra["micro_batching"] = MicroBatching(rows=micro)
    optimizer, scheduler = make_optimizer(model.parameters(), OptimConfig(lr=1e-6), 10)
    algo = OfflinePreference(
        model,
        optimizer,
        scheduler,
        PreferenceConfig(),
        grad_clip=1.0,
        precision="fp32",
        pad_id=0,
        layout="shared",
        **extra,
    )
    if device.type != "cpu":  # packed tensors are built on the CPU
        pack = algo.pack
        algo.pack = lambda pairs: _to(pack(pairs), device)
    g = torch.Generator().manual_seed(2)

    def ids(n: int) -> list[int]:
        return torch.randint(3, VOCAB, (n,), generator=g).tolist()

    pairs = [
        EncodedPair(
            ids(PROMPT),
            ids(RESPONSE),
            ids(int(torch.randint(RESPONSE // 2, RESPONSE, (1,), generator=g))),
        )
        for _ in range(batch // 2)
    ]

    def step():
        ref = algo.reference_log_probs(reference, pairs)
        return algo.step(pairs, ref)

    return step


def _to(packed, device):
    import dataclasses

    import torch

    return dataclasses.replace(
        packed,
        **{
            f.name: getattr(packed, f.name).to(device)
            for f in dataclasses.fields(packed)
            if isinstance(getattr(packed, f.name), torch.Tensor)
        },
    )


def _current(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    return _status("VmRSS")


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _peak(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _status("VmHWM")


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB → MB
    raise RuntimeError(f"no {key} in /proc/self/status")


# --------------------------------------------------------------------------------- report


def table(rows) -> str:
    head = (
        "| step | batch (seqs) | micro-batch | before peak / step MB | after peak / step MB "
        "| step memory before/after | before s | after s |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for algo, batch, micro, old, new in rows:
        before = f"{old['peak_mb']:.0f} / {old['step_mb']:.0f}" if old else "—"
        ratio = f"{old['step_mb'] / max(new['step_mb'], 1):.1f}x" if old else "—"
        lines.append(
            f"| {algo} | {batch} | {micro} | {before} | {new['peak_mb']:.0f} / "
            f"{new['step_mb']:.0f} | {ratio} | {old['seconds'] if old else '—'} | "
            f"{new['seconds']} |"
        )
    device = rows[0][4]["device"] if rows else "?"
    lines.append(
        f"\n(device: {device}; peak = {'max_memory_allocated' if device == 'cuda' else 'peak RSS'})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
