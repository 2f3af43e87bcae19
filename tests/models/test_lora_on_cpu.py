"""LoRA (peft): config errors, only adapters train, the reference is the base for free,
export as an adapter (and merged), adapter-only weight sync."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from placerl.config import load_config
from placerl.config.lora import LoraConfig
from placerl.config.schema import OptimConfig, RunConfig
from placerl.data.collate import left_pad
from placerl.errors import UserError
from placerl.models.loading import load_policy, load_reward_model, load_tokenizer, load_value_model
from placerl.models.lora import (
    FrozenBase,
    adapter_tensors,
    apply_lora,
    is_lora,
    parameter_bytes,
    with_lora,
)
from placerl.roles.actor import ActorWorker
from placerl.roles.reference import ReferenceWorker
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.runtime import build_runtime
from placerl.stages.online import make_algorithm
from placerl.trainer import train
from placerl.types import Field
from tests.conftest import fast_overrides

LORA = LoraConfig(r=4, alpha=8)


def _batch(model_dir, policy, seed=3):
    tok = load_tokenizer(model_dir)
    prompts = ["rev 12345=", "rev 9=", "rev 123="]
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id)
    params = SamplingParams(max_new_tokens=6, temperature=0.8)
    return RolloutWorker(policy, tok, params, seed=seed).generate(ids, mask)


def _perturb(model, scale=0.05, seed=1):
    """Adapters that change the outputs (peft starts lora_B at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in adapter_tensors(model).values():
            tensor.add_(scale * torch.randn(tensor.shape, generator=g))


def _cfg(model_dir, run_dir, stage, *extra):
    return load_config(None, [*fast_overrides(model_dir, run_dir, stage, 2), *extra], RunConfig)


def test_config_errors_name_the_key(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match=r"model.lora.dropout.*grpo"):
        _cfg(tiny_model_dir, tmp_path, "grpo", "model.lora.dropout=0.1")
    assert _cfg(tiny_model_dir, tmp_path, "sft", "model.lora.dropout=0.1").model.lora.dropout
    with pytest.raises(UserError, match="target_modules"):
        _cfg(tiny_model_dir, tmp_path, "sft", "model.lora.target_modules=attention")
    with pytest.raises(UserError, match="model.lora.r"):
        _cfg(tiny_model_dir, tmp_path, "sft", "model.lora.r=0")
    assert _cfg(tiny_model_dir, tmp_path, "sft").model.lora is None, "off by default"
    policy = load_policy(tiny_model_dir)
    with pytest.raises(UserError, match=r"named 'qproj'.*q_proj") as err:
        apply_lora(policy, LoraConfig(target_modules=["qproj"]))
    assert err.value.where == "model.lora.target_modules"
    with pytest.raises(UserError, match="output head"):
        apply_lora(policy, LoraConfig(target_modules=["lm_head"]))


def test_only_adapters_and_heads_train_and_have_optimizer_state(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    critic = apply_lora(load_value_model(tiny_model_dir, tok.pad_token_id), LORA, "critic")
    trained = {n for n, p in critic.named_parameters() if p.requires_grad}
    assert any("score.modules_to_save" in n for n in trained), "the value head trains in full"
    assert trained == {n for n in adapter_tensors(critic)}
    rm = apply_lora(load_reward_model(tiny_model_dir, tok.pad_token_id), LORA, "reward_model")
    assert any("score.modules_to_save" in n for n, p in rm.named_parameters() if p.requires_grad)

    policy = apply_lora(load_policy(tiny_model_dir), LORA)
    trained = [p for p in policy.parameters() if p.requires_grad]
    assert trained and all(
        ".lora_" in n for n, p in policy.named_parameters() if p.requires_grad
    ), "no head, no base weight trains"
    base_before = {n: t.clone() for n, t in policy.state_dict().items() if ".lora_" not in n}
    adapters_before = {n: t.clone() for n, t in adapter_tensors(policy).items()}
    actor = ActorWorker(policy, OptimConfig(lr=1e-2), 10, temperature=0.8)
    batch = _batch(tiny_model_dir, policy)
    batch[Field.OLD_LOG_PROBS] = actor.log_probs(batch)
    batch[Field.ADVANTAGES] = torch.randn(batch[Field.RESPONSE_IDS].shape)

    from placerl.algos.objectives import PolicyObjective

    actor.update(batch, PolicyObjective(skip_uninformative=False))
    after = policy.state_dict()
    assert all(torch.equal(after[n], t) for n, t in base_before.items()), "the base is frozen"
    assert any(not torch.equal(after[n], t) for n, t in adapters_before.items())
    params = [p for group in actor.optimizer.param_groups for p in group["params"]]
    assert len(params) == len(trained) and len(actor.optimizer.state) == len(trained)
    state_bytes = sum(
        v.numel() * v.element_size()
        for s in actor.optimizer.state.values()
        for v in s.values()
        if v.dim()
    )
    assert state_bytes == 2 * sum(p.numel() * 4 for p in trained), "Adam moments: adapters only"


def test_reference_is_the_base_with_the_adapter_disabled_and_costs_no_memory(
    tiny_model_dir, tmp_path
):
    def roles(*extra):
        cfg = _cfg(tiny_model_dir, tmp_path, "grpo", "grpo.kl_coef=0.1", *extra)
        policy = with_lora(load_policy(tiny_model_dir), cfg.model.lora)
        tok = load_tokenizer(tiny_model_dir)
        return build_runtime(cfg, tiny_model_dir, tok, policy, make_algorithm(cfg).needs).roles

    full, lora = roles(), roles("model.lora.r=4")
    assert lora.reference.shares_actor and not full.reference.shares_actor
    full_bytes = parameter_bytes(full.actor.model, full.reference.model)
    lora_bytes = parameter_bytes(lora.actor.model, lora.reference.model)
    base_bytes = parameter_bytes(load_policy(tiny_model_dir))
    adapters = sum(t.numel() * t.element_size() for t in adapter_tensors(lora.actor.model).values())
    print(
        f"actor+reference parameter bytes: full {full_bytes}, LoRA {lora_bytes} "
        f"(base {base_bytes}, adapters {adapters}): saved {full_bytes - lora_bytes}"
    )
    assert full_bytes == 2 * base_bytes
    assert lora_bytes == base_bytes + adapters, "no second copy of the base"

    _perturb(lora.actor.model)
    batch = _batch(tiny_model_dir, lora.actor.model)
    frozen = ReferenceWorker(load_policy(tiny_model_dir), temperature=0.8)
    lora.reference.temperature = 0.8
    lora.actor.model.train()  # the reference runs in eval mode whatever the actor's mode
    expected = frozen.log_probs(batch)
    assert torch.equal(lora.reference.log_probs(batch), expected)
    assert lora.actor.model.training, "the actor's mode is restored"
    actor = ActorWorker(lora.actor.model, OptimConfig(), 10, temperature=0.8)
    assert not torch.allclose(actor.log_probs(batch), expected), "scenario: adapters matter"
    assert torch.equal(lora.reference.log_probs(batch), expected), "adapters back on, base off"


def test_frozen_base_samples_like_the_base(tiny_model_dir):
    """The frozen sampler of RSO / BRAIn with proposal sft, under LoRA."""
    policy = apply_lora(load_policy(tiny_model_dir), LORA)
    _perturb(policy)
    view = FrozenBase(policy)
    assert parameter_bytes(view) == 0
    a = _batch(tiny_model_dir, view)
    b = _batch(tiny_model_dir, load_policy(tiny_model_dir))
    assert torch.equal(a[Field.RESPONSE_IDS], b[Field.RESPONSE_IDS])
    assert torch.equal(a[Field.OLD_LOG_PROBS], b[Field.OLD_LOG_PROBS])
    assert all(p.requires_grad for p in adapter_tensors(policy).values()), "still trainable"


def test_export_writes_an_adapter_and_a_merged_model_that_load(tiny_model_dir, tmp_path):
    run = tmp_path / "sft"
    cfg = _cfg(tiny_model_dir, run, "sft", "model.lora.r=4", "model.lora.merge_on_export=true")
    train(cfg)
    adapter_dir, merged_dir = run / "policy", run / "policy_merged"
    assert (adapter_dir / "adapter_config.json").exists()
    assert not (adapter_dir / "config.json").exists(), "policy/ is the adapter alone"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with_adapter = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(4, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b, c = (m(input_ids=ids).logits for m in (with_adapter, merged, plain))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, c, atol=1e-4), "training changed the policy"
    # an adapter directory is a valid model.path for the next stage: its base, merged
    loaded = load_policy(adapter_dir)
    assert not is_lora(loaded)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, b, atol=1e-5, rtol=1e-5)


def test_lora_reward_model_exports_a_usable_reward_model(tiny_model_dir, tmp_path):
    run = tmp_path / "rm"
    train(_cfg(tiny_model_dir, run, "rm", "model.lora.r=4", "model.lora.merge_on_export=true"))
    tok = load_tokenizer(run / "reward_model")
    from_adapter = load_reward_model(run / "reward_model", tok.pad_token_id, trained=True)
    merged = load_reward_model(run / "reward_model_merged", tok.pad_token_id, trained=True)
    ids = torch.randint(4, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = from_adapter(input_ids=ids).logits, merged(input_ids=ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    policy_adapter = tmp_path / "policy_adapter"  # a LoRA policy is not a reward model
    apply_lora(load_policy(tiny_model_dir), LORA).save_pretrained(policy_adapter)
    with pytest.raises(UserError, match="not a reward model"):
        load_reward_model(policy_adapter, tok.pad_token_id, trained=True)


def test_shadow_sync_moves_only_the_adapters_and_reproduces_the_trainer(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, "grpo", "model.lora.r=4", "placement.max_staleness=1")
    policy = with_lora(load_policy(tiny_model_dir), cfg.model.lora)
    tok = load_tokenizer(tiny_model_dir)
    runtime = build_runtime(cfg, tiny_model_dir, tok, policy, make_algorithm(cfg).needs)
    roles, shadow = runtime.roles, runtime.rollout_sync()
    _perturb(policy)
    stats = shadow.sync()
    full = parameter_bytes(load_policy(tiny_model_dir))
    adapters = sum(t.numel() * 4 for t in adapter_tensors(policy).values())
    print(f"bytes per sync: LoRA {stats.bytes}, full model {full}")
    assert stats.bytes == adapters and stats.metrics()["sync/bytes"] == adapters
    assert stats.bytes < full / 5
    a = _batch(tiny_model_dir, policy)
    b = _batch(tiny_model_dir, roles.rollout.model)
    assert torch.equal(a[Field.RESPONSE_IDS], b[Field.RESPONSE_IDS])
    assert torch.equal(a[Field.OLD_LOG_PROBS], b[Field.OLD_LOG_PROBS])


def test_ray_reference_shares_the_actor_only_where_the_actor_runs_it():
    """A LoRA reference is the actor's base on workers that run the actor (unsharded, or
    sharded over exactly the reference's workers); elsewhere it loads a copy of its own."""
    from placerl.placement.plan.plan import Cluster, DeviceSlot, Sharding
    from placerl.placement.plan.strategies import flatten, interleave, separate
    from placerl.runtime.ray.host import rollout_shares_actor
    from placerl.types import Role

    roles = (Role.ACTOR, Role.ROLLOUT, Role.CRITIC, Role.REWARD, Role.REFERENCE)

    def cluster(n):
        return Cluster(tuple(DeviceSlot("cpu", i) for i in range(n)))

    def shares(plan):
        return rollout_shares_actor(plan, Role.REFERENCE)

    assert shares(flatten(roles, cluster(4)))
    assert shares(flatten(roles, cluster(4), sharding=Sharding.FULL))
    assert shares(separate(roles, cluster(3), generation_slots=1))
    assert shares(interleave(roles, cluster(4)))  # a half of the replicated actor's workers
    assert not shares(interleave(roles, cluster(4), sharding=Sharding.FULL))


def test_a_lora_stage_continues_from_a_lora_stage(tiny_model_dir, tmp_path):
    """SFT with LoRA exports an adapter; GRPO on it (model.path = that adapter directory)
    starts from the merged SFT policy, which is also its reference (new adapter disabled)."""
    sft = tmp_path / "sft"
    train(_cfg(tiny_model_dir, sft, "sft", "model.lora.r=4"))
    cfg = load_config(
        None,
        [
            *fast_overrides(sft / "policy", tmp_path / "grpo", "grpo", 2),
            "grpo.kl_coef=0.1",
            "model.lora.r=4",
            "reward.function=tests.conftest:length_reward",
        ],
        RunConfig,
    )
    policy = with_lora(load_policy(sft / "policy"), cfg.model.lora)
    tok = load_tokenizer(sft / "policy")
    roles = build_runtime(cfg, sft / "policy", tok, policy, make_algorithm(cfg).needs).roles
    assert roles.reference.shares_actor
    _perturb(policy)
    batch = _batch(tiny_model_dir, policy)
    merged_sft = ReferenceWorker(load_policy(sft / "policy"))
    assert torch.equal(roles.reference.log_probs(batch), merged_sft.log_probs(batch))
    plain = ReferenceWorker(load_policy(tiny_model_dir))
    assert not torch.allclose(merged_sft.log_probs(batch), plain.log_probs(batch))
    train(cfg)
    config = (tmp_path / "grpo" / "policy" / "adapter_config.json").read_text()
    base = tmp_path / "grpo" / "policy_base"  # a plain model: peft alone loads the export
    assert str(base.resolve()) in config, "the new adapter's base is written beside it"
    merged = load_policy(sft / "policy").state_dict()
    assert all(torch.equal(t, merged[k]) for k, t in load_policy(base).state_dict().items()), (
        "the new adapter's base is the SFT's (its adapter merged)"
    )


def test_adapter_directories_load_into_other_heads(tiny_model_dir, tmp_path):
    """A reward model from a LoRA policy's directory, a critic from a LoRA reward model's:
    the merged backbone, whatever class the adapter was trained as."""
    from placerl.models.lora import save_model

    pad = load_tokenizer(tiny_model_dir).pad_token_id
    policy = apply_lora(load_policy(tiny_model_dir), LORA)
    _perturb(policy)
    save_model(policy, tmp_path / "policy")
    rm = apply_lora(load_reward_model(tiny_model_dir, pad), LORA, "reward_model")
    _perturb(rm)
    save_model(rm, tmp_path / "rm")

    def backbone(model):
        return {k: v for k, v in model.state_dict().items() if k.startswith("model.")}

    merged_policy = backbone(load_policy(tmp_path / "policy"))
    as_rm = backbone(load_reward_model(tmp_path / "policy", pad))
    assert as_rm.keys() == merged_policy.keys()
    assert all(torch.equal(as_rm[k], merged_policy[k]) for k in as_rm)
    assert not torch.equal(
        merged_policy["model.layers.0.self_attn.q_proj.weight"],
        load_policy(tiny_model_dir).state_dict()["model.layers.0.self_attn.q_proj.weight"],
    ), "scenario: the adapter changed the backbone"
    merged_rm = load_reward_model(tmp_path / "rm", pad, trained=True)
    critic = load_value_model(tmp_path / "rm", pad)
    assert all(torch.equal(v, backbone(merged_rm)[k]) for k, v in backbone(critic).items())
    assert not torch.equal(merged_rm.score.weight, rm.base_model.model.score.original_module.weight)
