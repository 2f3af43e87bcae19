"""SFT, reward model and DPO data-parallel on Ray workers train as one process does.

The same seed and global batch give the same losses and final weights in one process (local)
and on two Flatten workers, with replicas (gradients averaged) or FSDP2 (``sharding: full``).
Batches of 3 examples cut 1 + 2 over the workers (uneven shares), micro-batches of 2 rows make
the ranks run several forwards (and, balanced by workload, different examples together than
one process does), and SFT packs several examples per row. Tolerances as in
``test_invariants_on_cpu.py``: not bitwise, since a worker sums in another order.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.trainer import train
from tests.conftest import fast_overrides

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

COMMON = [
    "trainer.batch_size=3",  # 3 examples: 1 + 2 over two workers
    "trainer.micro_batch_size=2",  # rows per forward: several micro-batches per rank
    "trainer.save_every=0",
    "data.num_eval=0",
]
TWO_WORKERS = ["placement.strategy=flatten", "placement.num_workers=2"]
TWO_WORKERS += ["placement.threads_per_worker=1", "placement.device=cpu"]
KEYS = {
    "sft": ["loss/sft", "sft/grad_norm", "sft/completion_tokens"],
    "rm": ["loss/reward_model", "rm/accuracy", "rm/margin", "rm/grad_norm"],
    "dpo": ["loss/dpo", "logps/chosen", "logps/rejected", "rewards/margin", "dpo/grad_norm"],
}
TRAINED = {"sft": "policy", "rm": "reward_model", "dpo": "policy"}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def run(model_dir, run_dir, stage, extra):
    overrides = [*fast_overrides(model_dir, run_dir, stage, 3), *COMMON, *extra]
    train(load_config(None, overrides, RunConfig))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line.get("step", 0) > 0]


def assert_same(local, placed, keys):
    assert len(local) == len(placed) == 3
    for step, (a, b) in enumerate(zip(local, placed, strict=True), start=1):
        for key in keys:
            torch.testing.assert_close(
                b[key], a[key], rtol=1e-5, atol=1e-6, msg=f"step {step} {key}: {b[key]} vs {a[key]}"
            )


def assert_same_weights(local_dir, placed_dir):
    a, b = load_file(local_dir / "model.safetensors"), load_file(placed_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        diff = float((b[key] - a[key]).abs().max())
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=f"{key}: {diff}")


@pytest.mark.parametrize("sharding", ["none", "full"])
@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_two_flatten_workers_train_as_one_process(tiny_model_dir, tmp_path, stage, sharding):
    local = run(tiny_model_dir, tmp_path / "local", stage, [])
    placed_extra = [*TWO_WORKERS, f"placement.sharding={sharding}"]
    placed = run(tiny_model_dir, tmp_path / "flatten", stage, placed_extra)
    assert_same(local, placed, KEYS[stage])
    name = TRAINED[stage]
    assert_same_weights(tmp_path / "local" / name, tmp_path / "flatten" / name)
    spans = [
        json.loads(s) for s in (tmp_path / "flatten" / "timeline.jsonl").read_text().splitlines()
    ]
    workers = {s["worker"] for s in spans if s["phase"] == f"{stage}.train"}
    assert workers == {"all/w0", "all/w1"}, "both workers trained"


LORA_CKPT = ["model.lora.r=4", "model.lora.alpha=32", "model.gradient_checkpointing=true"]


@pytest.mark.parametrize(("stage", "sharding"), [("sft", "none"), ("sft", "full"), ("dpo", "none")])
def test_lora_with_checkpointing_on_two_workers_trains_as_one_process(
    tiny_model_dir, tmp_path, stage, sharding
):
    """LoRA adapters (the same seeded initialisation on every rank; DPO's reference is the
    model with its adapter disabled) and gradient checkpointing on 2 workers: the losses and
    the exported adapter of one process."""
    local = run(tiny_model_dir, tmp_path / "local", stage, LORA_CKPT)
    placed_extra = [*TWO_WORKERS, f"placement.sharding={sharding}", *LORA_CKPT]
    placed = run(tiny_model_dir, tmp_path / "flatten", stage, placed_extra)
    assert_same(local, placed, KEYS[stage])
    a = load_file(tmp_path / "local" / "policy" / "adapter_model.safetensors")
    b = load_file(tmp_path / "flatten" / "policy" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.parametrize("stage", [pytest.param("sft", marks=pytest.mark.sweep), "dpo"])
def test_evaluation_between_steps_on_sharded_workers(tiny_model_dir, tmp_path, stage):
    """Evaluation runs on rank 0 alone (its forwards, not its peers'), before the first step
    and after every one; FSDP's record of them must not make rank 0's next backward gather
    what its peer does not (it deadlocked). Same held-out metrics and losses as one process."""
    evals = ["data.num_eval=4", "trainer.eval_every=1"]
    local = run(tiny_model_dir, tmp_path / "local", stage, evals)
    placed = run(
        tiny_model_dir,
        tmp_path / "flatten",
        stage,
        [*evals, *TWO_WORKERS, "placement.sharding=full"],
    )
    keys = [k for k in local[0] if k.startswith("eval/") and isinstance(local[0][k], float)]
    assert keys
    assert_same(local, placed, [*KEYS[stage], *keys])
