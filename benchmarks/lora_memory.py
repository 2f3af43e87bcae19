"""What LoRA saves: the reference's memory and the bytes of a trainer → rollout sync.

Builds the local runtime's roles of a GRPO run with a KL term (actor, rollout, reference) on
a saved Llama, without and with ``model.lora``, side by side in one process, and prints

- the distinct parameter bytes actor + reference hold (without LoRA the reference is a second
  copy of the base; with LoRA it is the actor with its adapter disabled). Not RSS:
  ``from_pretrained`` maps safetensors files, so RSS growth says little about what is held;
- the bytes one sync moves to a rollout copy (full state dict vs adapters only).

    python benchmarks/lora_memory.py                          # the demo's 6.1M Llama
    python benchmarks/lora_memory.py --hidden 1024 --layers 8 --intermediate 2816
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.models.factory import TinyLlamaSize, make_model_dir
from placerl.models.loading import load_policy, load_tokenizer
from placerl.models.lora import parameter_bytes, with_lora
from placerl.runtime import build_runtime
from placerl.stages.online import make_algorithm
from placerl.stages.sources import builtin_corpus


def measure(model_dir: Path, lora: list[str]) -> tuple[int, int]:
    """(actor + reference parameter bytes, bytes per sync)."""
    overrides = [
        "stage=grpo",
        f"model.path={model_dir}",
        "grpo.kl_coef=0.05",
        "rollout.samples_per_prompt=2",
        "placement.max_staleness=1",  # a shadow rollout copy: the sync is measured
        *lora,
    ]
    cfg = load_config(None, overrides, RunConfig)
    policy = with_lora(load_policy(model_dir), cfg.model.lora)
    tokenizer = load_tokenizer(model_dir)
    runtime = build_runtime(cfg, model_dir, tokenizer, policy, make_algorithm(cfg).needs)
    held = parameter_bytes(runtime.roles.actor.model, runtime.roles.reference.model)
    return held, runtime.rollout_sync().sync().bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    size = TinyLlamaSize(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 128),
        intermediate_size=args.intermediate,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(Path(tmp) / "model", builtin_corpus(), size)
        base = parameter_bytes(load_policy(model_dir))
        full = measure(model_dir, [])
        lora = measure(model_dir, [f"model.lora.r={args.rank}"])
    mib = 2**20
    print(f"base model: {base / mib:.1f} MiB of parameters; LoRA rank {args.rank}, all-linear")
    print(f"{'':24}{'full':>12}{'LoRA':>12}{'ratio':>8}")
    rows = [("actor+reference MiB", 0), ("bytes per sync MiB", 1)]
    for label, i in rows:
        print(f"{label:24}{full[i] / mib:12.2f}{lora[i] / mib:12.2f}{lora[i] / full[i]:8.3f}")


if __name__ == "__main__":
    main()
