"""The planner's cost formulas against hand-computed numbers (issue 12 item 2)."""

from __future__ import annotations

import pytest

from placerl.placement.cost import collectives as col
from placerl.placement.cost import time as ct
from placerl.placement.cost.hardware import device_spec, engine_spec, parse_cluster, spec_cluster
from placerl.placement.cost.machine import CPU_DEFAULT, from_spec
from placerl.placement.cost.memory import (
    activation_bytes,
    kv_cache_bytes,
    logits_bytes,
    memory_problem,
    trained_state_bytes,
)
from placerl.placement.cost.shapes import ModelShape, named_shape, shape_from_dir, tiny_default
from placerl.placement.cost.workload import Workload
from placerl.placement.plan.cluster import cpu_cluster
from placerl.placement.plan.config import count_params
from placerl.placement.plan.plan import DeviceSlot
from placerl.types import Role

SMALL = ModelShape("small", layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, vocab=10)
GPU = DeviceSlot("gpu", 0, 0, 1, 80 * 10**9)


def workload(shape=SMALL, **kw):
    roles = (Role.ACTOR, Role.ROLLOUT, Role.REWARD)
    defaults = dict(prompts=2, samples=2, prompt_len=4, response_len=6)
    return Workload("grpo", roles, {Role.ACTOR: shape, Role.ROLLOUT: shape}, **{**defaults, **kw})


def test_shape_counts_by_hand():
    # kv_dim = 1 head × 4; block: 2·8·8 + 2·8·4 + 3·8·16 + 2·8 = 128 + 64 + 384 + 16 = 592
    assert SMALL.kv_dim == 4 and SMALL.layer_params == 592
    # embedding 80 + 2 blocks 1184 + final norm 8 + LM head 80
    assert SMALL.params == 1352
    assert SMALL.matmul_params == 1184 + 80
    # 2·1264 + 4·2 layers·8·context 3
    assert SMALL.flops_per_token(3) == 2 * 1264 + 4 * 2 * 8 * 3
    assert SMALL.kv_bytes_per_token(2) == 2 * 2 * 4 * 2
    assert SMALL.as_value_model().head_params == 9


def test_named_llama_sizes_match_their_published_counts():
    assert named_shape("7B").params == 6_738_415_616  # Llama-2-7b
    assert named_shape("13b").params == 13_015_864_320  # Llama-2-13b
    assert abs(named_shape("70B").params - 68.98e9) < 0.01e9  # Llama-2-70b
    assert tiny_default().params == 6_163_712  # the demo's "6.1M"


def test_shape_from_config_json_counts_the_saved_parameters(tiny_model_dir):
    assert shape_from_dir(tiny_model_dir).params == count_params(tiny_model_dir)


def test_memory_terms_by_hand():
    full8 = trained_state_bytes(SMALL, workload(), shards=8)
    assert full8 == {"weights": 1352 * 4 / 8, "gradients": 1352 * 4 / 8, "optimizer": 1352 * 8 / 8}
    # a Llama block saves 10·h + 4·f values per token (measured; 144 here), 2·h outside
    assert activation_bytes(SMALL, 100, False, 2) == 2 * 144 * 100 * 2 + 2 * 8 * 100 * 2
    assert activation_bytes(SMALL, 100, False, 4) == 2 * activation_bytes(SMALL, 100, False, 2)
    assert activation_bytes(SMALL, 100, True, 2) == 2 * 8 * 100 * 2 + 144 * 100 * 2 + 3200
    assert logits_bytes(SMALL, 100, training=True) == 2 * 4 * 100 * 10
    assert logits_bytes(SMALL.as_value_model(), 100, training=True) == 0
    assert kv_cache_bytes(SMALL, rows=3, context=10, dtype=2) == 3 * 10 * 32
    lora = trained_state_bytes(SMALL, workload(lora_rank=2), shards=1)
    adapters = 2 * 2 * (2 * 16 + 2 * 12)  # layers · r · (2·(h+h) + 2·(h+kv))
    assert lora["gradients"] == adapters * 4 and lora["optimizer"] == adapters * 8


def test_collectives_by_hand():
    assert col.all_reduce_s(1e9, 4, 1e9, 0.0) == pytest.approx(1.5)
    assert col.all_reduce_s(1e9, 4, 1e9, 0.01) == pytest.approx(1.5 + 0.06)
    assert col.all_gather_s(1e9, 4, 1e9, 0.0) == pytest.approx(0.75)
    assert col.broadcast_s(1e9, 4, 1e9, 0.001) == pytest.approx(1.003)
    assert col.all_reduce_s(1e9, 1, 1e9, 1.0) == 0.0
    m = CPU_DEFAULT.with_(intra_bw=1e9, collective_latency=0.0, devices_per_node=8)
    ddp = col.grad_comm_s(
        1e8, m, 4, "none", None, 1, optimizer_steps=2, micro_calls=6, param_bytes=2
    )
    assert ddp == pytest.approx(2 * 1.5 * 0.4)  # fp32 gradients: 0.4 GB
    # full: per micro-batch 2 all-gathers of bf16 weights (0.2 GB) + a reduce-scatter (0.4 GB)
    full = col.grad_comm_s(1e8, m, 4, "full", None, 1, 2, 6, 2)
    assert full == pytest.approx(6 * (2 * 0.75 * 0.2 + 0.75 * 0.4))
    # hybrid(2) of 4: the same inside pairs, plus an all-reduce of half the grads over 2
    hyb = col.grad_comm_s(1e8, m, 4, "hybrid", 2, 1, 2, 6, 2)
    assert hyb == pytest.approx(6 * (2 * 0.5 * 0.2 + 0.5 * 0.4) + 2 * 1.0 * 0.2)


def test_decode_step_is_overhead_plus_roofline_on_gpu_and_sum_on_cpu():
    m = CPU_DEFAULT.with_(memory_bw=1e6, decode_flops=1e6, decode_overhead_per_layer=0.01)
    slot = DeviceSlot("cpu", 0, 0, 1)
    memory = (1352 * 4 + 3 * 10 * 64) / 1e6
    compute = 3 * SMALL.flops_per_token(10) / 1e6
    assert ct.decode_step_s(SMALL, m, slot, 3, 10, 4) == pytest.approx(0.02 + memory + compute)
    g = m.with_(kind="gpu", roofline=True)
    assert ct.decode_step_s(SMALL, g, GPU, 3, 10, 4) == pytest.approx(0.02 + max(memory, compute))


def test_generate_and_train_seconds_by_hand():
    m = CPU_DEFAULT.with_(
        prefill_flops=1e6,
        decode_flops=1e6,
        memory_bw=1e12,
        decode_overhead_per_layer=0.0,
        call_overhead=0.5,
        update_overhead=0.25,
        train_flops=1e6,
        forward_flops=1e6,
        thread_exponent=1.0,
    )
    slot = DeviceSlot("cpu", 0, 0, 1)
    w = workload()
    # 2 prompts prefilled once each, then 6 steps of 4 rows at context 4 + 3
    prefill = 2 * 4 * SMALL.flops_per_token(2) / 1e6 + 0.5
    decode = 6 * (4 * SMALL.flops_per_token(7) / 1e6 + 1352 * 4 / 1e12 + 4 * 7 * 64 / 1e12)
    assert ct.generate_s(SMALL, m, slot, w, 4) == pytest.approx(prefill + decode)
    # update: tokens = 2 prompts·4 + 4 rows·6 = 32 through the blocks at context 5, the LM
    # head (2·h·V = 160 FLOPs) on the 24 response tokens only; 3 forwards; one optimizer step
    head = 2 * 8 * 10
    per_forward = 32 * (SMALL.flops_per_token(5) - head) + 24 * head
    assert ct.pass_flops(SMALL, w, 2, 4) == pytest.approx(per_forward)
    assert ct.train_compute_s(SMALL, m, slot, w, 4, None, False) == pytest.approx(
        3 * per_forward / 1e6 + 0.25
    )
    # two micro-batches of 2 rows: one more forward and backward call; checkpointing: 4 passes
    two_threads = DeviceSlot("cpu", 0, 0, 2)
    assert ct.train_compute_s(SMALL, m, two_threads, w, 4, 2, True) == pytest.approx(
        4 * per_forward / 2e6 + 0.25 + 2 * 0.5
    )
    # a value model reads every row's prompt (no shared-prefix forward) and has no LM head
    value = SMALL.as_value_model()
    assert ct.pass_prompts(value, w, 4) == 4 and ct.pass_prompts(SMALL, w, 4) == 2
    # … and pays its own intercepts where the profile measured them (the policy's otherwise)
    value_flops = ct.pass_flops(value, w, 4, 4)
    assert ct.train_compute_s(value, m, slot, w, 4, None, False) == pytest.approx(
        3 * value_flops / 1e6 + 0.25
    )
    own = m.with_(value_update_overhead=0.125, value_call_overhead=0.0625)
    assert ct.train_compute_s(value, own, slot, w, 4, None, False) == pytest.approx(
        3 * value_flops / 1e6 + 0.125
    )
    assert ct.forward_s(value, own, slot, w, 4, 2) == pytest.approx(value_flops / 1e6 + 2 * 0.0625)
    assert ct.forward_s(SMALL, own, slot, w, 4, None) == pytest.approx(per_forward / 1e6 + 0.5)


def test_cpu_slot_overheads_interpolate_by_threads_and_slow_when_cores_are_shared():
    m = CPU_DEFAULT.with_(
        update_overhead=0.01,
        update_overhead_all=0.03,
        profiled_threads=3,
        shared_overhead_factor=1.5,
        shared_core_factor=0.8,
        thread_exponent=1.0,
        decode_flops=1e9,
        decode_thread_exponent=0.5,
    )
    whole = DeviceSlot("cpu", 0, 0, 3)
    assert m.overhead("update_overhead", whole) == pytest.approx(0.03)
    # 2 of 3 threads: halfway, its 1-thread part slowed by the neighbour slot
    two = DeviceSlot("cpu", 0, 0, 2)
    assert m.overhead("update_overhead", two) == pytest.approx(0.015 + 0.5 * (0.03 - 0.015))
    assert m.rate(1e9, two) == pytest.approx(2e9 * 0.8) and m.rate(1e9, whole) == 3e9
    assert m.decode_rate(two) == pytest.approx(1e9 * 2**0.5 * 0.8)
    assert m.overhead("update_overhead", GPU) == 0.01  # GPUs: one figure


def test_the_profile_fit_is_least_squares_through_the_points():
    from placerl.profiling.roles import _fit

    rate, intercept = _fit([0.3, 0.5, 0.9], [1e9, 2e9, 4e9])  # t = F / 5e9 + 0.1
    assert rate == pytest.approx(5e9) and intercept == pytest.approx(0.1)
    assert _fit([0.5, 0.4], [1e9, 2e9])[1] >= 0  # never a negative intercept or slope


def test_the_policy_fit_tells_the_shared_prompt_forwards_fixed_cost_apart():
    from placerl.profiling.roles import _fit_grouped

    flops = [1e9, 2e9, 4e9, 1e9, 3e9, 5e9]
    grouped = [True, True, True, False, False, False]
    times = [f / 5e9 + 0.1 + (0.03 if g else 0.0) for f, g in zip(flops, grouped)]
    rate, icpt, extra = _fit_grouped(times, flops, grouped)
    assert (rate, icpt, extra) == pytest.approx((5e9, 0.1, 0.03))
    # nothing to tell apart: the plain fit, no extra
    assert _fit_grouped(times[:3], flops[:3], grouped[:3])[2] == 0.0


def test_grouped_samples_pay_the_shared_prompt_forwards_intercepts():
    m = CPU_DEFAULT.with_(
        update_overhead=0.01, prefix_update_overhead=0.004, call_overhead=0.002, thread_exponent=1
    )
    slot = DeviceSlot("cpu", 0, 0, 1)
    grouped, plain = workload(), workload().with_(samples=1)
    assert ct.shares_prompts(SMALL, grouped) and not ct.shares_prompts(SMALL, plain)
    assert not ct.shares_prompts(SMALL.as_value_model(), grouped)  # critics read every prompt
    assert m.overhead("update_overhead", slot, prefix=True) == pytest.approx(0.014)
    assert m.overhead("update_overhead", slot, value=True, prefix=True) == pytest.approx(0.01)
    flops = 3 * ct.pass_flops(SMALL, plain, 4, 4)
    base = ct.train_compute_s(SMALL, m, slot, plain, 4, None, False)
    assert base == pytest.approx(flops / m.train_flops + 0.01)


def test_specs_are_data_with_sources():
    count, spec = parse_cluster("16xH100")
    assert count == 16 and spec.bf16_dense_tflops == pytest.approx(989.4)
    assert device_spec("h200").memory_gb == 141 and device_spec("A100-80G").hbm_tb_per_s > 2
    cluster = spec_cluster(16, spec)
    assert {s.node for s in cluster.slots} == {0, 1} and cluster.slots[8].index == 0
    m = from_spec(spec, engine_spec("vllm"))
    assert m.train_flops == pytest.approx(989.4e12 * 0.40)
    assert all(s.source for s in (spec, engine_spec("placerl")))


def test_a_70b_actor_does_not_fit_unsharded_on_80gb_and_the_reason_names_it():
    from placerl.placement.plan import strategies

    shape = named_shape("70B")
    w = workload(shape, precision="bf16")
    cluster = spec_cluster(8, device_spec("H100"))
    roles = (Role.ACTOR, Role.ROLLOUT, Role.REWARD)
    plan = strategies.flatten(roles, cluster, rule_reward=True)
    reason = memory_problem(plan, w)
    assert "n0:gpu0 needs" in reason and "actor optimizer" in reason
    # 16 B/param of 70B is 1.1 TB: more than 8 × 80 GB even sharded, within 64 × 80 GB
    sharded = strategies.flatten(roles, cluster, rule_reward=True, sharding="full")
    assert "actor optimizer 64.2" in memory_problem(sharded, w)
    # sharded over 64 GPUs the training state fits, but placerl's sampler needs a whole bf16
    # copy (128.5 GiB) per GPU; a vLLM-class engine splits it over 4 GPUs (tensor parallel)
    big = spec_cluster(64, device_spec("H100"))
    plan64 = strategies.flatten(roles, big, rule_reward=True, sharding="full")
    assert "rollout weights 128.5" in memory_problem(plan64, w)
    assert memory_problem(plan64, w.with_(engine="vllm", gen_tp=4)) is None


@pytest.mark.parametrize(
    ("stage", "overrides", "rows", "train_rows", "reference_rows"),
    [
        (
            "online_dpo",
            ["rollout.samples_per_prompt=4", "online_dpo.pairs_per_prompt=2"],
            32,
            32,
            32,
        ),
        ("online_dpo", ["rollout.samples_per_prompt=8"], 64, 16, 16),
        ("rso", ["rso.num_candidates=8", "rso.num_accepted=4"], 64, 32, 32),
        (
            "rso",
            ["rso.num_candidates=8", "rso.num_accepted=4", "rso.ranking=tournament"],
            64,
            48,
            48,
        ),
        ("brain", ["brain.num_samples=4", "brain.proposal=policy"], 32, 32, 32),
        ("brain", ["brain.num_samples=4"], 32, 32, 0),
    ],
)
def test_the_sampling_preference_stages_workloads(
    stage, overrides, rows, train_rows, reference_rows
):
    """Sampling, scoring, the reference and the update of online DPO, RSO and BRAIn: the
    rollout's rows are sampled and scored; the pairs (2 rows each) are referenced and trained
    on (online DPO, RSO); BRAIn trains on every sample, with a reference only when it has one;
    none recomputes π_old."""
    from placerl.config import load_config
    from placerl.config.schema import RunConfig
    from placerl.placement.cost.phases import step_phases
    from placerl.placement.cost.workload import workload_from_config
    from placerl.placement.plan import strategies

    base = [f"stage={stage}", "trainer.batch_size=8", "rollout.max_new_tokens=16"]
    w = workload_from_config(load_config(None, [*base, *overrides], RunConfig))
    assert w.rows == rows and w.learning.rows == train_rows
    assert (w.referenced.rows if w.referenced else 0) == reference_rows
    assert w.learning.samples == (2 if stage != "brain" else w.samples)
    plan = strategies.flatten(w.roles, cpu_cluster(2, 1, cores=2), rule_reward=True)
    phases = {
        p.name: p.seconds
        for p in step_phases(plan, w.with_(recompute="always", epochs=2), CPU_DEFAULT)
    }
    assert "old_log_probs" not in phases and phases["update"] > 0 and phases["generate"] > 0
    assert ("reference" in phases) == (reference_rows > 0)
    # the update's time grows with its rows, not the rollout's
    more = w.with_(train_prompts=(w.train_prompts or w.prompts) * 2)
    if stage != "brain":
        upd = {p.name: p.seconds for p in step_phases(plan, more, CPU_DEFAULT)}["update"]
        assert upd > {p.name: p.seconds for p in step_phases(plan, w, CPU_DEFAULT)}["update"]


def test_a_small_models_memory_shortfall_is_said_in_readable_units():
    """A small model on a small slot: MiB, not '0.0 GiB > 0.0 GiB'."""
    from placerl.placement.plan import strategies
    from placerl.placement.plan.plan import Cluster

    w = workload(tiny_default())
    roles = (Role.ACTOR, Role.ROLLOUT, Role.REWARD)
    slot = DeviceSlot("gpu", 0, memory_bytes=8 * 1024**2)
    plan = strategies.flatten(roles, Cluster((slot,)), rule_reward=True)
    reason = memory_problem(plan, w)
    assert reason.startswith("n0:gpu0 needs ") and "> 8 MiB" in reason and "0.0 GiB" not in reason
