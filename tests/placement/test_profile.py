"""``placerl profile``: the store, reuse, and the fitted Machine (measurements faked: the real
profile takes about a minute and is run by hand, ``placerl profile``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from placerl.cli import main
from placerl.placement.cost import calibration
from placerl.placement.cost import conditions as conditions_module
from placerl.placement.cost.calibration import machine_for
from placerl.placement.cost.conditions import Conditions
from placerl.placement.cost.machine import CPU_DEFAULT, Machine
from placerl.placement.cost.profiles import find_profile
from placerl.placement.cost.shapes import named_shape, tiny_default
from placerl.profiling import machine as machine_part
from placerl.profiling import measure
from placerl.profiling import profile as prof


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "store"))
    return tmp_path / "store"


NOW = Conditions(
    threads=4, load_avg=0.1, matmul_1=50.0, matmul_all=180.0, copy_gbps=8.0, dispatch_us=2.0
)


def fake_measurements(monkeypatch):
    monkeypatch.setattr(prof, "available_cores", lambda: 4)
    monkeypatch.setattr(calibration, "_threads", lambda: 4)
    fake_probe(monkeypatch, NOW)
    monkeypatch.setattr(
        prof,
        "measure_decode_at",
        lambda *a, **k: (
            [{"decode_step_s": {}, "decode_overhead_per_layer": 2e-4, "decode_flops": 1e10}] * 2
        ),
    )
    monkeypatch.setattr(
        prof, "measure_optimizer_at", lambda model, counts, **k: [5e8] * len(counts)
    )
    roles = {
        "train_flops": 3e10,
        "forward_flops": 4e10,
        "value_train_flops": 2e10,
        "value_forward_flops": 3e10,
        "update_overhead": 0.002,
        "value_update_overhead": 0.001,
        "forward_call_s": 0.001,
        "value_call_s": 0.0005,
        "prefix_update_overhead": 0.003,
        "prefix_call_s": 0.0007,
    }
    many = {
        **roles,
        "train_flops": 5.4e10,
        "update_overhead": 0.004,
        "value_update_overhead": 0.003,
    }
    monkeypatch.setattr(prof, "measure_roles_at", lambda *a, **k: [roles, many])
    monkeypatch.setattr(
        machine_part,
        "measure_collectives",
        lambda shape=None: {
            "bw": 1e9,
            "latency": 5e-5,
            "step_alone_s": 0.9,
            "step_shared_s": 1.0,
            "decode_alone_s": 0.1,
            "decode_shared_s": 0.12,
        },
    )
    ray_calls = {"rpc_latency": 0.003, "worker_update_factor": 1.05}
    ray_calls |= {
        "worker_bytes": 4.5e8,
        "worker_measured_by": "test",
        "worker_step_overhead": 0.005,
    }
    monkeypatch.setattr(machine_part, "measure_ray_part", lambda work, process: ray_calls)
    runs = {"process_bytes": 4e8, "step_overhead": 0.001}
    monkeypatch.setattr(machine_part, "measure_local", lambda work: runs)


def fake_probe(monkeypatch, conditions):
    """The machine "now", as the one-second probe would measure it."""
    monkeypatch.setattr(prof, "probe", lambda threads: conditions)
    monkeypatch.setattr(conditions_module, "probe", lambda threads, rounds=9: conditions)
    conditions_module._CACHE.clear()


def test_profile_writes_the_fit_and_is_reused(store, tmp_path, capsys, monkeypatch):
    fake_measurements(monkeypatch)
    out = tmp_path / "p.json"
    assert main(["profile", "--out", str(out)]) == 0
    raw = json.loads(out.read_text())
    m = Machine(**raw["machine"])
    assert m.train_flops == 3e10 and m.intra_bw == 1e9 and m.decode_overhead_per_layer == 2e-4
    # the rates and intercepts of placerl's own role calls; 5.4e10 / 3e10 on 4 threads
    assert m.value_train_flops == 2e10 and m.update_overhead == 0.002
    assert m.update_overhead_all == 0.004 and m.profiled_threads == 4
    # a value model's intercepts apart from the policy's
    assert (m.value_update_overhead, m.value_update_overhead_all) == (0.001, 0.003)
    assert (m.value_call_overhead, m.value_call_overhead_all) == (0.0005, 0.0005)
    assert (m.prefix_update_overhead, m.prefix_call_overhead_all) == (0.003, 0.0007)
    assert 4**m.thread_exponent == pytest.approx(1.8)
    assert m.shared_core_factor == pytest.approx(0.9)
    assert m.shared_overhead_factor == pytest.approx(1.2) and m.rpc_latency == 0.003
    assert m.worker_update_factor == 1.05
    assert (m.process_bytes, m.worker_bytes) == (4e8, 4.5e8)  # profiling/runs.py's baselines
    assert (m.step_overhead, m.worker_step_overhead) == (0.001, 0.005)  # … and controller
    assert (
        raw["key"]["shape"] == "L6-h256-f1024-a8-kv4-V512"
        and "profile written" in capsys.readouterr().out
    )
    assert main(["profile"]) == 0
    assert "reusing the profile of" in capsys.readouterr().out
    found = find_profile("cpu", tiny_default())
    assert found is not None and found[2]
    machine, note = machine_for("cpu", tiny_default(), None)
    assert machine.train_flops == 3e10 and "reused" in note
    # another shape on the same machine: reused, and said so
    machine, note = machine_for("cpu", named_shape("7B"), None)
    assert "measured on shape L6-h256" in note


def test_without_a_profile_the_defaults_are_named(store):
    machine, note = machine_for("cpu", tiny_default(), None)
    assert "not profiled" in machine.name and "placerl profile" in note


def test_role_calls_are_measured_on_the_device_given_and_fitted():
    """The GPU profile's path (device and precision passed through) on a tiny CPU model."""
    from placerl.placement.cost.shapes import ModelShape
    from placerl.profiling.roles import measure_roles

    shape = ModelShape("t", layers=1, hidden=32, intermediate=64, heads=4, kv_heads=2, vocab=64)
    policy, critic = prof.build_model(shape), prof.build_model(shape, value_head=True)
    out = measure_roles(policy, critic, shape, 1, 1e-4, device="cpu", precision="bf16")
    assert out["train_flops"] > 0 and out["value_forward_flops"] > 0
    assert len(out["times"]["update"]) == 6 and out["update_overhead"] + 1e-4 >= 0  # intercept
    assert out["prefix_update_overhead"] >= 0 and out["prefix_call_s"] >= 0
    assert out["value_update_overhead"] + 1e-4 >= 0 and out["value_call_s"] >= 0
    assert measure.synced(print, "cpu") is print  # CPU work is synchronous: nothing to wait for


def test_thread_counts_take_turns_repeat_by_repeat(monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    medians = measure.timed_threads(lambda: None, (1, 2), repeats=3)
    assert len(medians) == 2 and all(m >= 0 for m in medians)
    assert seen == [1, 2] + [1, 2] * 3  # each count warmed up, then alternating


def test_decode_is_measured_on_each_thread_count_and_fitted():
    from placerl.placement.cost.shapes import ModelShape

    shape = ModelShape("t", layers=1, hidden=32, intermediate=64, heads=4, kv_heads=2, vocab=64)
    one, two = prof.measure_decode_at(prof.build_model(shape), shape, (1, 2))
    for d in (one, two):
        assert set(d["decode_step_s"]) == {2, 8, 32} and d["decode_flops"] > 0


def test_a_gpu_profile_overrides_the_spec_with_what_it_measured():
    from placerl.profiling.gpu import gpu_machine

    shape = named_shape("7B")
    roles = {
        "train_flops": 4e14,
        "forward_flops": 5e14,
        "value_train_flops": 3e14,
        "value_forward_flops": 4e14,
        "update_overhead": 0.01,
        "value_update_overhead": 0.006,
        "forward_call_s": 0.002,
        "value_call_s": 0.001,
    }
    decode = {"decode_overhead_per_layer": 1e-3, "decode_flops": 1e14}
    copies = {"host_bw": 2.5e10}
    nccl = {"bw": 3e11, "latency": 1e-5}
    m = gpu_machine(shape, "NVIDIA-H200", roles, decode, 2e10, copies, nccl, 0.004, 2)
    assert m.kind == "gpu" and m.train_flops == 4e14 and m.host_bw == 2.5e10
    assert m.intra_bw == 3e11 and m.rpc_latency == 0.004 and "H200" in m.name
    assert (m.value_update_overhead, m.value_call_overhead) == (0.006, 0.001)
    # the decode intercept less the weights' streaming time at the spec's bandwidth
    streamed = shape.params * 2 / m.memory_bw / shape.layers
    assert m.decode_overhead_per_layer == pytest.approx(max(0.0, 1e-3 - streamed))
    one_gpu = gpu_machine(shape, "NVIDIA-H200", roles, decode, 2e10, copies, None, 0.004, 2)
    assert one_gpu.intra_bw != 3e11  # no second GPU: the spec's link


def test_a_gpu_profile_without_ray_keeps_the_specs_call_latency(monkeypatch):
    """A one-GPU machine without Ray (the GPU check's) profiles all the rest."""
    import importlib.util

    from placerl.profiling import gpu as profile_gpu

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    lines = []
    assert profile_gpu.ray_call_latency(named_shape("7B"), lines.append) is None
    assert "Ray is not installed" in lines[0]
    spec = profile_gpu.gpu_machine(named_shape("7B"), "NVIDIA-H200", *_measured(), None, 2)
    measured = profile_gpu.gpu_machine(named_shape("7B"), "NVIDIA-H200", *_measured(), 0.004, 2)
    assert measured.rpc_latency == 0.004 and spec.rpc_latency != 0.004 and spec.rpc_latency > 0


def _measured():
    roles = dict.fromkeys(("train_flops", "forward_flops", "value_train_flops"), 4e14)
    roles |= dict.fromkeys(("value_forward_flops",), 4e14)
    roles |= dict.fromkeys(("update_overhead", "value_update_overhead"), 0.01)
    roles |= dict.fromkeys(("forward_call_s", "value_call_s"), 0.002)
    decode = {"decode_overhead_per_layer": 1e-3, "decode_flops": 1e14}
    return roles, decode, 2e10, {"host_bw": 2.5e10}, None


def test_profile_on_gpu_without_one_is_one_message(store, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert main(["profile", "--device", "gpu"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_the_progress_bar_names_each_step_and_counts_the_time_box():
    """What ``placerl profile`` shows: every step named (logged off a terminal), progress
    within a step, a skipped step said so, the bar's total reached at the end."""
    from placerl.profiling.progress import Steps

    said = []
    with Steps(10.0, said.append, show=False) as steps:
        with steps.step("decode steps", 4.0) as advance:
            advance(0.5)
            assert steps.progress.tasks[0].completed == pytest.approx(2.0)
        assert steps.progress.tasks[0].completed == pytest.approx(4.0)
        steps.skip("two tiny runs", 5.0, "the 60 s time box")
    assert said == ["profile: decode steps", "profile: two tiny runs skipped (the 60 s time box)"]
    assert steps.progress.tasks[0].completed == steps.progress.tasks[0].total == 10.0
    assert set(steps.times) == {"decode steps", "two tiny runs"}


def test_a_profile_with_no_room_left_skips_the_machine_wide_parts(store, monkeypatch, capsys):
    """The time box: with the model's own measurements using it up, the machine-wide parts
    keep the defaults, are said to, and are measured by the next profile."""
    fake_measurements(monkeypatch)
    monkeypatch.setattr(prof, "BUDGET_S", 0.0)
    raw = prof.run_profile(tiny_default(), log=print, budget_s=0.0, show=False)
    out = capsys.readouterr().out
    assert out.count("skipped (the 0 s time box; defaults stand in)") == 3
    m = Machine(**raw["machine"])
    assert m.rpc_latency == CPU_DEFAULT.rpc_latency and m.train_flops == 3e10
    assert raw["measurements"]["ray"] is None
    prof.run_profile(tiny_default(), log=print, show=False)  # room again: measured now
    out = capsys.readouterr().out
    assert "none stored" in out.split("\n")[0] and "skipped" not in out


def test_a_profile_leaves_torchs_threads_as_it_found_them(store, monkeypatch):
    """strategy auto profiles inside the run's process, then trains: on its own threads."""
    import torch

    fake_measurements(monkeypatch)
    decode = prof.measure_decode_at

    def one_thread(*a, **k):
        torch.set_num_threads(1)  # as the measurements do
        return decode(*a, **k)

    monkeypatch.setattr(prof, "measure_decode_at", one_thread)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        prof.run_profile(tiny_default(), log=lambda m: None, show=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def fake_timed_calls(monkeypatch, seconds_per_attempt):
    """A call whose duration depends on torch's thread count and the attempt (each attempt is
    one warm-up and three repeats of each of 1 and 2 threads: 8 calls)."""
    import torch

    state = {"threads": 1, "calls": 0}
    monkeypatch.setattr(torch, "set_num_threads", lambda n: state.update(threads=n))
    clock = {"now": 0.0}
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])

    def call():
        attempt = min(state["calls"] // 8, len(seconds_per_attempt) - 1)
        state["calls"] += 1
        clock["now"] += seconds_per_attempt[attempt][state["threads"]]

    return call, state


def test_a_core_held_by_another_process_during_the_multithreaded_runs_is_measured_again(
    monkeypatch,
):
    measure.retaken.clear()
    # attempt 1: 2 threads 8x slower than 1 (a held core); attempt 2: the machine is quiet
    call, state = fake_timed_calls(monkeypatch, [{1: 0.010, 2: 0.080}, {1: 0.010, 2: 0.006}])
    assert measure.timed_threads(call, (1, 2), repeats=3) == pytest.approx([0.010, 0.006])
    assert state["calls"] == 16 and measure.retaken == pytest.approx([8.0])


def test_a_core_held_throughout_keeps_the_least_contended_attempt(monkeypatch):
    measure.retaken.clear()
    attempts = [{1: 0.010, 2: 0.080}, {1: 0.010, 2: 0.030}, {1: 0.010, 2: 0.050}]
    call, state = fake_timed_calls(monkeypatch, attempts)
    assert measure.timed_threads(call, (1, 2), repeats=3) == pytest.approx([0.010, 0.030])
    assert state["calls"] == 24 and measure.retaken == pytest.approx([8.0, 3.0])


def test_quiet_or_sub_millisecond_timings_are_taken_once(monkeypatch):
    measure.retaken.clear()
    for attempts in ([{1: 0.010, 2: 0.007}], [{1: 0.0001, 2: 0.0004}]):
        call, state = fake_timed_calls(monkeypatch, attempts)
        measure.timed_threads(call, (1, 2), repeats=3)
        assert state["calls"] == 8
    assert measure.retaken == []


def test_a_busy_machine_lengthens_the_estimate_and_is_said_at_start(tmp_path, capsys, monkeypatch):
    import re

    fake_measurements(monkeypatch)

    def announced(load_avg: float) -> tuple[float, str]:
        monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / f"store-{load_avg}"))
        fake_probe(monkeypatch, replace(NOW, load_avg=load_avg))
        assert main(["profile", "--force"]) == 0
        said = capsys.readouterr()
        out = said.out + said.err
        return float(re.search(r"about (\d+) s", out).group(1)), out

    quiet, said_quiet = announced(0.1)
    busy, said_busy = announced(11.0)  # 11 others runnable on 4 cores: x3
    assert "the machine is busy" not in said_quiet
    assert "the machine is busy (load average 11.0 on 4 cores)" in said_busy
    assert busy - 1 == pytest.approx(3 * (quiet - 1), abs=3)
    assert [prof.busy_factor(load, 2) for load in (0.0, 1.0, 1.5, 7.0)] == [1.0, 1.0, 1.25, 4.0]
