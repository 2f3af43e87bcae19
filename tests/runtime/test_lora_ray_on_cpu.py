"""LoRA on Ray. Separate: only the adapters travel trainer → rollout, the rollout copy then
holds the trainer's weights bit for bit, and the trainer's worker keeps one base for actor and
reference (the reference is the actor with its adapter disabled). Interleave: data-parallel
LoRA actor and critic follow the local trajectory."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from placerl.models.loading import load_policy
from placerl.models.lora import adapter_tensors, apply_lora, parameter_bytes
from placerl.runtime.ray.host import rollout_shares_actor
from placerl.types import Role
from tests.runtime.test_invariants_on_cpu import (  # noqa: F401 (a fixture)
    GRPO,
    TWO_WORKERS,
    assert_same_trajectory,
    reward_model_dir,
    run,
)
from tests.runtime.test_separate_on_cpu import LOSSES, SEPARATE, _check_every_sync, _run, _stage

ray = pytest.importorskip("ray")

LORA = ["model.lora.r=4", "model.lora.alpha=32"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_lora_separate_syncs_adapters_only_and_follows_the_local_run(tiny_model_dir, tmp_path):
    local, _ = _run(_stage(tiny_model_dir, tmp_path / "local", LORA))
    stage = _stage(tiny_model_dir, tmp_path / "separate", [*SEPARATE, *LORA])
    plan = stage.runtime.plan
    assert rollout_shares_actor(plan, Role.REFERENCE), "the reference lives with the actor"
    held = stage.runtime.call_hosts(range(len(plan.slots)), "parameter_bytes")
    syncs = _check_every_sync(stage)
    placed, _ = _run(stage)

    base = parameter_bytes(load_policy(tiny_model_dir))
    lora = apply_lora(load_policy(tiny_model_dir), stage.cfg.model.lora)
    adapters = sum(t.numel() * t.element_size() for t in adapter_tensors(lora).values())
    print(
        f"per worker parameter bytes {held} (base {base}, adapters {adapters}); "
        f"bytes per sync {placed[-1]['sync/bytes']:.0f} vs full model {base}"
    )
    assert sorted(held) == [base + adapters] * 2, "actor + reference: one base; rollout: one"
    for step, (a, b) in enumerate(zip(local, placed, strict=True)):
        for key in LOSSES:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), f"step {step} {key}"
    synced = [m["sync/bytes"] for m in placed if "sync/bytes" in m]
    assert synced and all(s == adapters for s in synced), "adapters only travel"
    assert adapters < base / 5
    assert len(syncs) == 2
    for trainer, copies in syncs:
        assert copies == [trainer], "the rollout copy holds the trainer's weights"
    assert syncs[0][0] != syncs[1][0], "scenario: the trainer moved between syncs"


@pytest.mark.slow
def test_lora_ppo_on_interleave_follows_the_local_run(
    tiny_model_dir,
    reward_model_dir,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    """Interleave: a LoRA actor and critic data-parallel over two workers (adapter gradients
    averaged, the value head trained in full), the reference on one of them as the actor's
    base; the same trajectory and adapters as one process."""
    extra = [f"reward.model={reward_model_dir}", "ppo.minibatches=2", *LORA]
    local = run(tiny_model_dir, tmp_path / "local", "ppo", 2, extra)
    interleave = [*extra, "placement.strategy=interleave", *TWO_WORKERS]
    placed = run(tiny_model_dir, tmp_path / "interleave", "ppo", 2, interleave)
    assert_same_trajectory(local, placed, ["loss/policy", "loss/value", "kl/mean"])
    for name in ("policy", "critic"):
        a = load_file(tmp_path / "local" / name / "adapter_model.safetensors")
        b = load_file(tmp_path / "interleave" / name / "adapter_model.safetensors")
        assert a.keys() == b.keys() and any("score" in k for k in a) == (name == "critic")
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=f"{name} {key}")


@pytest.mark.slow
def test_lora_grpo_on_fsdp_flatten_follows_the_local_run(tiny_model_dir, tmp_path):
    """FSDP2 over a LoRA model (frozen base, trained adapters), the reference its base."""
    extra = [*GRPO, *LORA]
    local = run(tiny_model_dir, tmp_path / "local", "grpo", 3, extra)
    flatten = [*extra, "placement.strategy=flatten", *TWO_WORKERS, "placement.sharding=full"]
    placed = run(tiny_model_dir, tmp_path / "flatten", "grpo", 3, flatten)
    assert_same_trajectory(local, placed, ["loss/policy", "loss/kl", "kl/mean"])
    a = load_file(tmp_path / "local" / "policy" / "adapter_model.safetensors")
    b = load_file(tmp_path / "flatten" / "policy" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.slow
def test_lora_separate_resume_is_bitwise_equal_to_straight_run(tiny_model_dir, tmp_path):
    """Checkpoints under Separate with a lagging rollout copy: the controller's mirror and
    the copy's weights move as adapters; stop at 2 + resume to 4 = a straight run to 4."""
    from placerl.checkpoint import latest_checkpoint, load_state
    from placerl.config import load_config
    from placerl.config.schema import RunConfig
    from placerl.trainer import train
    from tests.conftest import fast_overrides

    extra = [*GRPO, *LORA, *SEPARATE, "placement.max_staleness=2", "staleness.sync_every=2"]

    def go(run_dir, steps, resume=False):
        overrides = [*fast_overrides(tiny_model_dir, run_dir, "grpo", steps), *extra]
        train(load_config(None, overrides, RunConfig), resume=resume)

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    go(straight, 4)
    go(stopped, 3)
    saved = load_state(latest_checkpoint(stopped / "checkpoints"))["stage"]["pipeline"]
    assert saved["rollout_weights"] is not None, "scenario: the lagging copy is saved"
    assert all(".lora_" in k for k in saved["rollout_weights"]), "as adapters"
    go(stopped, 4, resume=True)
    a = load_file(straight / "policy" / "adapter_model.safetensors")
    b = load_file(stopped / "policy" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
