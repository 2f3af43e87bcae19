"""``model.precision: bf16`` end to end, on CPU under bf16 autocast: fp32 master weights, frozen
models in bf16, sampling in bf16, π_old in the update's precision (first ratio 1), FSDP2's
mixed-precision policy."""

from __future__ import annotations

import pytest
import torch

from placerl.algos import core
from placerl.algos.registry import POLICY_LOSSES
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.models.loading import load_reward_model, load_tokenizer
from placerl.models.precision import autocast
from placerl.trainer import train
from tests.conftest import fast_overrides

LENGTH_REWARD = "reward.function=tests.conftest:length_reward"


def _cfg(model_dir, run_dir, stage, *extra):
    overrides = [*fast_overrides(model_dir, run_dir, stage, steps=1), "placement.device=cpu"]
    return load_config(None, [*overrides, *extra], RunConfig)


def test_autocast_is_bf16_only_when_asked():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("fp32"):
        assert (a @ b).dtype == torch.float32


def test_frozen_models_are_held_in_the_training_precision(tiny_model_dir, tmp_path):
    from placerl.algos.ppo import PPO
    from placerl.runtime import build_runtime

    rm_dir = tmp_path / "rm"
    tokenizer = load_tokenizer(tiny_model_dir)
    load_reward_model(tiny_model_dir, tokenizer.pad_token_id).save_pretrained(rm_dir)
    cfg = _cfg(tiny_model_dir, tmp_path / "run", "ppo", f"reward.model={rm_dir}")
    for precision, frozen in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        cfg.model.precision = precision
        from placerl.models.loading import load_policy

        policy = load_policy(tiny_model_dir)
        roles = build_runtime(cfg, tiny_model_dir, tokenizer, policy, PPO(cfg.ppo).needs).roles
        assert roles.actor.model.dtype == torch.float32  # master weights
        assert roles.critic.model.dtype == torch.float32
        assert roles.reference.model.dtype == frozen
        assert roles.reward.model.dtype == frozen
        opt_state = roles.actor.optimizer.param_groups[0]["params"][0]
        assert opt_state.dtype == torch.float32


def test_dpo_and_rso_frozen_copies_in_bf16(tiny_model_dir, tmp_path):
    from placerl.stages import build_stage

    dpo = build_stage(_cfg(tiny_model_dir, tmp_path / "dpo", "dpo", "model.precision=bf16"))
    assert dpo.model.dtype == torch.float32 and dpo.reference.dtype == torch.bfloat16
    assert dpo.algo.layout != "padded"  # the bf16 reference did not force the padded layout
    rso = build_stage(
        _cfg(tiny_model_dir, tmp_path / "rso", "rso", "model.precision=bf16", LENGTH_REWARD)
    )
    assert rso.pipeline.roles.rollout.model.dtype == torch.bfloat16  # the frozen initial policy
    assert rso.roles.actor.model.dtype == torch.float32


def _first_ratio(monkeypatch, cfg) -> tuple[float, float]:
    """ratio_mean and the largest |log ratio| of a token at the first minibatch."""
    seen = []
    real = core.policy_loss_clipped

    def recording(log_probs, old_log_probs, advantages, mask, **kwargs):
        loss, stats = real(log_probs, old_log_probs, advantages, mask, **kwargs)
        gap = ((log_probs.detach() - old_log_probs).abs() * mask).max()
        seen.append((float(stats["ratio_mean"]), float(gap)))
        return loss, stats

    monkeypatch.setitem(POLICY_LOSSES._items, "ppo_clip", recording)  # the loss, by its name
    train(cfg)
    return seen[0]


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_first_ratio_of_a_fresh_batch_is_one_under_bf16(
    tiny_model_dir, tmp_path, monkeypatch, stage
):
    """π_old from the trainer's bf16 forward (recompute_log_probs auto); with the sampler's
    own log-probs (stale: the behaviour before) the KV-cache decode's bf16 rounding shows."""
    extra = [
        "model.precision=bf16",
        f"{stage}.minibatches=2",  # two passes: π_old is not the update's own forward
        "trainer.batch_size=8",
        "rollout.max_new_tokens=8",
    ]
    if stage == "grpo":
        extra.append(LENGTH_REWARD)
    ratio, gap = _first_ratio(monkeypatch, _cfg(tiny_model_dir, tmp_path / "a", stage, *extra))
    assert abs(ratio - 1.0) < 1e-6 and gap < 1e-5
    sampler = _cfg(
        tiny_model_dir, tmp_path / "b", stage, *extra, "staleness.recompute_log_probs=stale"
    )
    ratio, gap = _first_ratio(monkeypatch, sampler)
    assert gap > 1e-4  # bf16 rounding of a different computation (~1e-3 here)


def test_fsdp2_mixed_precision_policy_keeps_fp32_masters(tiny_model_dir, tmp_path):
    """bf16 compute under FSDP2 (one rank, gloo): bf16 parameters in the forward, fp32
    sharded parameters and gradients (torchtitan's policy at any mesh size)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from placerl.models.loading import load_policy
    from placerl.runtime.ray.data_parallel import shard_model

    if dist.is_initialized():
        pytest.skip("a process group already exists")
    # a file rendezvous: no TCP port that another test run on this machine may hold
    store = f"file://{tmp_path / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        model = load_policy(tiny_model_dir)
        shard_model(model, init_device_mesh("cpu", (1,)), precision="bf16")
        seen = []
        layer = model.model.layers[0].mlp.down_proj
        handle = layer.register_forward_hook(lambda m, i, o: seen.append(m.weight.dtype))
        ids = torch.tensor([[1, 2, 3, 4]])
        model(input_ids=ids).logits.float().sum().backward()
        handle.remove()
        assert seen == [torch.bfloat16]
        params = list(model.parameters())
        assert all(p.dtype == torch.float32 for p in params)
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)
    finally:
        dist.destroy_process_group()
