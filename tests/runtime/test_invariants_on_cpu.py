"""Placement does not change training: the same seed and global batch give the same losses and
weights in one process (local) and on two Ray workers (Flatten, Interleave, FSDP).

Not bitwise: a worker runs its rows as a smaller batch, and CPU kernels sum in a
batch-size-dependent order, so log-probs differ by ~1e-7 and gradients are averaged in another
order. Losses are compared with rtol 1e-5 and atol 1e-6: a policy loss near 0 is a difference
of O(1) per-token terms, so its error is absolute. Responses vary in length (stop strings), so
workers hold different token counts and a wrong global-loss weighting would show at ~1e-2.

Weights are compared after several Adam steps, so no coordinate may have an exact gradient of 0
that rounding turns into ±1e-9: Adam steps by lr·m̂/(√v̂ + 1e-8), which makes that noise a step
of ~lr/4, and its momentum keeps moving the weight on later steps. A KL loss to a reference
equal to the initial policy does exactly that on the first minibatch (π = π_ref: the KL gradient
is 0, computed as the difference of two forwards over different rows). With 2 minibatches the
local run itself then ends 6e-4 apart in the embeddings when torch uses 1 thread or 2; with SGD
or a large Adam ε it agrees to 1e-8. So the 2-minibatch KL test takes a reference unlike the
initial policy.
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
def reference_dir(tmp_path_factory):
    """A second tiny policy (same tokenizer, other weights): a reference unlike the initial
    policy, so the KL gradient is not 0 up to rounding on the first minibatch (module doc)."""
    from placerl.models.factory import TinyLlamaSize, make_model_dir
    from placerl.stages.sources import builtin_corpus
    from tests.conftest import TINY

    path = tmp_path_factory.mktemp("reference") / "model"
    return make_model_dir(path, builtin_corpus(), TinyLlamaSize(**TINY), seed=1)


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
@pytest.mark.parametrize("scenario", ["kl-loss", "skip-zero-advantages"])
def test_grpo_with_two_minibatches_on_two_flatten_workers(
    tiny_model_dir, reference_dir, tmp_path, scenario
):
    """Shuffled minibatches cut 1 + 2 rows over the workers. ``skip-zero-advantages``: no KL
    term, so samples of groups with equal rewards are left out of the forward (a worker may
    keep only part of its rows) and the reported loss must still be the full minibatch's."""
    keys = ["loss/policy", "actor/grad_norm"]
    if scenario == "kl-loss":
        extra = [*GRPO, "grpo.minibatches=2", f"reference={reference_dir}"]
        keys += ["loss/kl", "kl/mean", "actor/ratio_mean"]
    else:
        extra = [*GRPO, "grpo.minibatches=2", "grpo.kl_coef=0"]
    local = run(tiny_model_dir, tmp_path / "local", "grpo", 3, extra)
    if scenario == "skip-zero-advantages":
        assert any(line.get("actor/skipped_share", 0) > 0 for line in local), "scenario: skips"
    placed_extra = [*extra, "placement.strategy=flatten", *TWO_WORKERS]
    placed = run(tiny_model_dir, tmp_path / "flatten", "grpo", 3, placed_extra)
    assert_same_trajectory(local, placed, keys)
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


@pytest.mark.slow
def test_evaluation_runs_where_the_policy_lives(tiny_model_dir, tmp_path):
    """Under Flatten the held-out evaluation samples on the workers (the rollout is the
    actor's module there), not on the controller's mirror; its figures are the local run's."""

    def final_eval(run_dir, extra):
        overrides = [*fast_overrides(tiny_model_dir, run_dir, "grpo", 2), *COMMON, *extra]
        return train(load_config(None, [*overrides, "data.num_eval=6"], RunConfig))

    local = final_eval(tmp_path / "local", GRPO)
    placed = final_eval(tmp_path / "flatten", [*GRPO, "placement.strategy=flatten", *TWO_WORKERS])
    assert set(local) == set(placed) and {"eval/accuracy", "eval/reward"} <= set(local)
    for key in local:
        assert placed[key] == pytest.approx(local[key], rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_bf16_on_two_flatten_workers_replicas_and_fsdp(tiny_model_dir, tmp_path):
    """bf16 on Ray workers (autocast on replicas; FSDP2's MixedPrecisionPolicy when sharded,
    a bf16 reference on each worker) follows the local bf16 run within bf16 rounding: the KL
    loss within 5%, the ratio within 1e-3 (the computations differ in shape, so not 1e-6)."""
    extra = [*GRPO, "model.precision=bf16", "grpo.minibatches=2"]
    local = run(tiny_model_dir, tmp_path / "local", "grpo", 2, extra)
    for sharding in ("none", "full"):
        placed_extra = [*extra, "placement.strategy=flatten", *TWO_WORKERS]
        placed_extra.append(f"placement.sharding={sharding}")
        placed = run(tiny_model_dir, tmp_path / sharding, "grpo", 2, placed_extra)
        assert len(placed) == len(local) == 2
        for a, b in zip(local, placed, strict=True):
            assert b["loss/kl"] == pytest.approx(a["loss/kl"], rel=0.05), sharding
            assert b["actor/ratio_mean"] == pytest.approx(a["actor/ratio_mean"], abs=1e-3)
