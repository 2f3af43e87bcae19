"""The memory model's measured terms, against hand-computed numbers: Llama activations,
chunked logits, shared prompts, and a CPU process's baseline and checkpoint copy."""

from __future__ import annotations

import subprocess

import pytest

from placerl.placement.cost.hardware import device_spec, spec_cluster
from placerl.placement.cost.machine import CPU_DEFAULT, from_profile
from placerl.placement.cost.memory import (
    activation_bytes,
    block_values_per_token,
    checkpoint_copy_bytes,
    cpu_process_terms,
    logits_bytes,
    memory_per_slot,
    object_store_bytes,
    train_tokens,
)
from placerl.placement.cost.shapes import ModelShape
from placerl.placement.cost.workload import Workload
from placerl.placement.plan.cluster import cpu_cluster, local_slot
from placerl.placement.plan.config import local_plan
from placerl.placement.plan.plan import Cluster
from placerl.placement.plan.strategies import flatten
from placerl.profiling import runs as pm
from placerl.types import Role

SMALL = ModelShape("small", layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, vocab=10)
GRPO = (Role.ACTOR, Role.ROLLOUT, Role.REWARD)


def workload(**kw) -> Workload:
    shapes = {Role.ACTOR: SMALL, Role.ROLLOUT: SMALL}
    base = dict(stage="grpo", roles=GRPO, shapes=shapes, prompts=2, samples=4)
    return Workload(**(base | {"prompt_len": 10.0, "response_len": 5.0} | kw))


def test_llama_block_activations_by_hand():
    assert block_values_per_token(SMALL) == 10 * 8 + 4 * 16  # 144
    # 2 blocks × 144 values × 100 tokens × 4 B, plus the embedding output and final norm
    assert activation_bytes(SMALL, 100, False, 4) == 2 * 144 * 100 * 4 + 2 * 8 * 100 * 4
    # checkpointing: each block's input (h), one block recomputed, the same outside
    assert activation_bytes(SMALL, 100, True, 4) == 2 * 8 * 100 * 4 + 144 * 100 * 4 + 6400
    # 50 gathered prompt positions keep the prompt's K and V: 2·kv_dim = 8 values per block
    assert activation_bytes(SMALL, 100, False, 2, shared_kv=50) == 2 * (14400 + 400) * 2 + 3200


def test_logits_are_one_chunk_of_the_lm_head():
    assert logits_bytes(SMALL, 100, training=True) == 2 * 4 * 100 * 10
    assert logits_bytes(SMALL, 100, training=False) == 4 * 100 * 10
    big = ModelShape("big-vocab", 2, 8, 16, 2, 1, vocab=2**20)  # 2**24 // 2**20 = 16 tokens
    assert logits_bytes(big, 100, training=True) == 2 * 4 * 16 * 2**20
    assert logits_bytes(SMALL.as_value_model(), 100, training=True) == 0


def test_rows_sharing_a_prompt_run_it_once():
    # 8 rows of 4 samples: 2 prompts of 10 tokens, 8 responses of 5; 8 × 10 gathered
    assert train_tokens(workload(), 8) == (2 * 10 + 8 * 5, 80)
    assert train_tokens(workload(samples=1), 8) == (8 * 15, 0.0)


def test_checkpoint_copy_in_one_process_and_in_a_ray_worker():
    terms = {"actor weights": 40.0, "actor optimizer": 80.0, "critic weights": 10.0}
    terms |= {"critic optimizer": 20.0, "reward weights": 5.0, "actor activations": 50.0}
    roles = (Role.ACTOR, Role.CRITIC, Role.REWARD)
    assert checkpoint_copy_bytes(terms, roles, in_process=True) == 80 + 20  # all moments
    assert checkpoint_copy_bytes(terms, roles, in_process=False) == 80  # the largest, pickled
    assert object_store_bytes(terms, roles) == 40 + 80 + 10 + 20  # trained weights + moments
    machine = CPU_DEFAULT.with_(process_bytes=1000.0, worker_bytes=2000.0)
    local = cpu_process_terms(terms, roles, True, machine)
    assert "actor activations" not in local and local["checkpoint copy"] == 100
    assert "object store copy" not in local
    assert local["process baseline"] == 1000 and sum(local.values()) == 155 + 100 + 1000
    worker = cpu_process_terms(terms, roles, False, machine)
    assert worker["checkpoint copy"] == 80 and worker["object store copy"] == 150
    assert sum(worker.values()) == 155 + 80 + 150 + 2000
    busy = cpu_process_terms(terms | {"actor activations": 500.0}, roles, False, machine)
    assert "checkpoint copy" not in busy and busy["actor activations"] == 500
    assert busy["object store copy"] == 150 and busy["process baseline"] == 2000
    assert "process baseline" not in cpu_process_terms(terms, roles, True, None)


def test_cpu_slots_add_the_process_baseline_and_gpu_slots_do_not():
    machine = CPU_DEFAULT.with_(process_bytes=1e6, worker_bytes=3e6)
    w = workload()
    local = memory_per_slot(local_plan(GRPO, Cluster((local_slot("cpu"),)), 0), w, machine=machine)
    assert local[0].terms["process baseline"] == 1e6
    plan = flatten(GRPO, cpu_cluster(2, 1, cores=2), rule_reward=True)
    flat, with_machine = memory_per_slot(plan, w), memory_per_slot(plan, w, machine=machine)
    assert [m.total - n.total for m, n in zip(with_machine, flat, strict=True)] == [3e6, 3e6]
    gpu = flatten(GRPO, spec_cluster(2, device_spec("H100")), rule_reward=True)
    assert all("process baseline" not in m.terms for m in memory_per_slot(gpu, w, machine=machine))


def test_old_cpu_profiles_get_the_default_baselines():
    old = {"machine": {k: v for k, v in vars(CPU_DEFAULT).items() if not k.endswith("_bytes")}}
    m = from_profile(old)
    assert (m.process_bytes, m.worker_bytes) == (
        CPU_DEFAULT.process_bytes,
        CPU_DEFAULT.worker_bytes,
    )
    assert from_profile({"machine": vars(CPU_DEFAULT) | {"process_bytes": 7.0}}).process_bytes == 7


def test_the_probe_runs_are_valid_configs(tmp_path):
    from placerl.config.schema import RunConfig

    for placement in ({"strategy": "local"}, {"strategy": "flatten", "num_workers": 1}):
        cfg = RunConfig.model_validate(pm.tiny_config(tmp_path, placement))
        assert cfg.stage == "grpo" and cfg.trainer.steps == pm.STEPS > pm.WARMUP
        assert cfg.trainer.save_every == 0


def test_baselines_are_the_tiny_runs_peaks_less_the_tiny_state(monkeypatch):
    import placerl.models.factory as factory

    runs = []

    def fake_run(raw):
        runs.append(raw["placement"]["strategy"])
        peak = 5e8 if raw["placement"]["strategy"] == "local" else 6e8
        gaps = [0.001, 0.002, 0.009] if raw["placement"]["strategy"] == "local" else [0.006] * 3
        return {"workers": [{"peak": peak}], "controller": peak, "step_gaps": gaps}

    monkeypatch.setattr(factory, "make_model_dir", lambda *a, **k: None)
    monkeypatch.setattr(pm, "tiny_state_bytes", lambda model_dir: 1e6)
    monkeypatch.setattr(pm, "run_fresh", fake_run)
    out = pm.measure_runs(log=lambda message: None)
    assert runs == ["local", "flatten"]
    assert (out["process_bytes"], out["worker_bytes"]) == (5e8 - 1e6, 6e8 - 1e6)
    assert (out["step_overhead"], out["worker_step_overhead"]) == (0.002, 0.006)  # medians

    def no_ray(raw):
        if raw["placement"]["strategy"] != "local":
            raise subprocess.CalledProcessError(1, "python")
        return fake_run(raw)

    monkeypatch.setattr(pm, "run_fresh", no_ray)
    out = pm.measure_runs(log=lambda message: None)
    assert out["worker_bytes"] == 5e8 - 1e6 + pm.RAY_WORKER_EXCESS
    assert "excess" in out["worker_measured_by"]
    assert "worker_step_overhead" not in out  # the profile keeps the default then


@pytest.mark.slow
def test_the_probes_measure_real_baselines():
    out = pm.measure_runs(log=lambda message: None)  # two tiny runs in fresh processes
    assert 100 * 2**20 < out["process_bytes"] < 4 * 2**30
    assert 100 * 2**20 < out["worker_bytes"] < 4 * 2**30
    # the controller's own work a step: more than nothing, far less than a tiny step
    assert 0 < out["step_overhead"] < 0.1 and 0 < out["worker_step_overhead"] < 0.1
