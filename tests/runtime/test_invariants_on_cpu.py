"""Placement does not change training: the same seed and global batch give the same losses and
weights in one process (local) and on two Ray workers (Flatten, Interleave, FSDP).

Not bitwise: a worker runs its rows as a smaller batch, and CPU kernels sum in a
batch-size-dependent order, so log-probs differ by ~1e-7 and gradients are averaged in another
order. Losses are compared with rtol 1e-5 and atol 1e-6: a policy loss near 0 is a difference
of O(1) per-token terms, so its error is absolute. Responses vary in length (stop strings), so
workers hold different token counts and a wrong global-loss weighting would show at ~1e-2.
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

COMMON = [
    "trainer.batch_size=3",  # 6 rows: minibatches of 3 split 1 + 2 over two workers
    "trainer.save_every=0",
    "data.num_eval=0",
    "rollout.max_new_tokens=6",
    'rollout.stop_strings=["e","a","o","i"]',  # responses of different lengths
]
TWO_WORKERS = ["placement.num_workers=2", "placement.threads_per_worker=1"]
GRPO = [
    "reward.function=tests.conftest:length_reward",
    "grpo.kl_coef=0.05",
    "grpo.minibatches=1",
]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    """A tiny reward model (random head): with a model reward Interleave splits the reward
    model and the reference over disjoint workers."""
    from placerl.models.factory import save_tokenizer
    from placerl.models.loading import load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    torch.manual_seed(1)
    model = load_reward_model(tiny_model_dir, tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("rm") / "rm"
    model.save_pretrained(path)
    save_tokenizer(tokenizer, path)
    return path


def run(model_dir, run_dir, stage, steps, extra):
    cfg = load_config(
        None, [*fast_overrides(model_dir, run_dir, stage, steps), *COMMON, *extra], RunConfig
    )
    train(cfg)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line.get("step", 0) > 0]


def assert_same_trajectory(local, placed, keys):
    assert len(local) == len(placed)
    for step, (a, b) in enumerate(zip(local, placed, strict=True), start=1):
        assert a["response/length"] == b["response/length"], f"step {step}: other samples"
        for key in keys:
            # kl/mean sums per-token differences of two log-probs, each off by ~1e-7 when a
            # worker computes its rows as a smaller batch: an absolute error of a few 1e-6
            atol = 2e-5 if key == "kl/mean" else 1e-6
            torch.testing.assert_close(
                b[key], a[key], rtol=1e-5, atol=atol, msg=f"step {step} {key}: {b[key]} vs {a[key]}"
            )


def assert_same_weights(local_dir, placed_dir):
    a, b = load_file(local_dir / "model.safetensors"), load_file(placed_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        diff = float((b[key] - a[key]).abs().max())
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=f"{key}: {diff}")


@pytest.fixture(scope="module")
def grpo_local(tiny_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("grpo") / "local"
    return run_dir, run(tiny_model_dir, run_dir, "grpo", 3, GRPO)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["none", "full"])
def test_grpo_on_two_flatten_workers_follows_the_local_trajectory(
    tiny_model_dir, tmp_path, grpo_local, sharding
):
    local_dir, local = grpo_local
    assert any(line["response/length"] < 6 for line in local), "scenario: lengths vary"
    extra = [*GRPO, "placement.strategy=flatten", *TWO_WORKERS, f"placement.sharding={sharding}"]
    placed = run(tiny_model_dir, tmp_path / "flatten", "grpo", 3, extra)
    keys = ["loss/policy", "loss/kl", "actor/grad_norm", "actor/ratio_mean", "kl/mean"]
    assert_same_trajectory(local, placed, keys)
    assert_same_weights(local_dir / "policy", tmp_path / "flatten" / "policy")


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="open bug: with 2 minibatches per step, GRPO on 2 Flatten workers ends 6e-4 away "
    "from local in the embedding weights (1 minibatch matches; PPO interleave with 2 matches)",
)
def test_grpo_with_two_minibatches_on_two_flatten_workers(tiny_model_dir, tmp_path):
    extra = [*GRPO, "grpo.minibatches=2"]
    local = run(tiny_model_dir, tmp_path / "local", "grpo", 3, extra)
    placed_extra = [*extra, "placement.strategy=flatten", *TWO_WORKERS]
    placed = run(tiny_model_dir, tmp_path / "flatten", "grpo", 3, placed_extra)
    assert_same_trajectory(local, placed, ["loss/policy", "actor/grad_norm"])
    assert_same_weights(tmp_path / "local" / "policy", tmp_path / "flatten" / "policy")

    # every worker's phases are on the timeline, and the Gantt chart draws them
    from placerl.plotting import plot_run

    spans = [
        json.loads(s) for s in (tmp_path / "flatten" / "timeline.jsonl").read_text().splitlines()
    ]
    assert {(s["worker"], s["phase"]) for s in spans} >= {
        ("all/w0", "rollout.generate"),
        ("all/w1", "rollout.generate"),
        ("all/w0", "actor.update"),
        ("all/w1", "actor.update"),
    }
    assert any(p.name == "timeline.png" for p in plot_run(tmp_path / "flatten"))


@pytest.mark.slow
def test_ppo_on_interleave_follows_the_local_trajectory(tiny_model_dir, reward_model_dir, tmp_path):
    extra = [
        f"reward.model={reward_model_dir}",
        "ppo.minibatches=2",
        "ppo.loss_agg=seq-mean-token-mean",
    ]
    local = run(tiny_model_dir, tmp_path / "local", "ppo", 2, extra)
    interleave = [*extra, "placement.strategy=interleave", *TWO_WORKERS]
    placed = run(tiny_model_dir, tmp_path / "interleave", "ppo", 2, interleave)

    workers = json.loads((tmp_path / "interleave" / "workers.json").read_text())
    roles = {w["worker"]: set(w["roles"]) for w in workers}
    assert roles == {
        "g0/w0": {"actor", "rollout", "critic", "reference"},
        "g1/w1": {"actor", "rollout", "critic", "reward"},
    }, "reference and reward model on disjoint workers, trained models on both"
    keys = ["loss/policy", "loss/value", "actor/grad_norm", "critic/grad_norm", "kl/mean"]
    assert_same_trajectory(local, placed, keys)
    for model in ("policy", "critic"):
        assert_same_weights(tmp_path / "local" / model, tmp_path / "interleave" / model)
