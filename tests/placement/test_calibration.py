"""Calibration you can trust: a profile's conditions against a probe of the machine now (as it
is, rescaled, or refused), the closest stored shape with a wider uncertainty, a profile that
records nothing refused, and auto profiling first where nothing is usable."""

from __future__ import annotations

import json
import random

import pytest
from placement_helpers import CLUSTERS, QUIET, auto_config, quiet_probe, store_profile_of

from placerl.errors import UserError
from placerl.placement.auto.plan import calibration_for, decide
from placerl.placement.cost.calibration import EXACT, calibrate
from placerl.placement.cost.conditions import SAME, SPEEDUP, UNIFORM, Conditions, compare
from placerl.placement.cost.machine import CPU_DEFAULT, RATES, TIMES, Machine
from placerl.placement.cost.profiles import shape_distance
from placerl.placement.cost.shapes import ModelShape, named_shape, tiny_default

THEN = Conditions.from_dict(QUIET)


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "store"))


def scaled(c: Conditions, **factors: float) -> Conditions:
    """``c`` with each named speed multiplied (``dispatch`` as a speed: its time divided)."""
    raw = c.to_dict()
    for name in ("matmul_1", "matmul_all", "copy_gbps"):
        raw[name] *= factors.get(name, 1.0)
    raw["dispatch_us"] /= factors.get("dispatch", 1.0)
    return Conditions.from_dict(raw)


def test_the_same_machine_is_used_as_it_is_within_the_probes_noise():
    rng = random.Random(0)
    for _ in range(200):
        now = scaled(
            THEN,
            **{
                k: rng.uniform(1 - 0.99 * SAME, 1 + 0.99 * SAME)
                for k in ("matmul_1", "matmul_all", "copy_gbps", "dispatch")
            },
        )
        verdict = compare(THEN, now)
        assert verdict.usable and verdict.speed == 1.0 and not verdict.rescaled


def test_a_uniformly_slower_or_faster_machine_is_rescaled_by_the_mean_ratio():
    rng = random.Random(1)
    for _ in range(200):
        base = rng.choice([rng.uniform(0.4, 0.8), rng.uniform(1.25, 2.5)])
        spread = {
            k: base * rng.uniform(1.0, UNIFORM**0.5)
            for k in ("matmul_1", "matmul_all", "copy_gbps", "dispatch")
        }
        verdict = compare(THEN, scaled(THEN, **spread))
        assert verdict.usable and verdict.rescaled
        assert min(spread.values()) <= verdict.speed <= max(spread.values())
        assert "rescaled" in verdict.reason and "load average" in verdict.reason


def test_a_profile_taken_beside_a_busy_core_is_refused_on_the_quiet_machine():
    """The probe's ratios measured here (planner benchmark, under-load row): a profile taken
    while a second process burned a core, probed quiet again. Its parallel speed-up moved
    x1.17: refused (rescaled as uniform, it mispredicted by up to 302%)."""
    now = scaled(THEN, matmul_1=1.03, matmul_all=1.21, copy_gbps=0.98, dispatch=1.15)
    verdict = compare(THEN, now)
    assert not verdict.usable and "parallel speed-up moved x1.17" in verdict.reason
    # and the other way round: profiled quiet, the machine busy now
    assert not compare(now, THEN).usable
    rng = random.Random(3)
    for _ in range(200):  # slower or faster, the speed-up moved more than SPEEDUP either way
        base = rng.choice([rng.uniform(0.4, 0.8), rng.uniform(1.25, 2.5)])  # not the same
        speedup = SPEEDUP * rng.uniform(1.01, 2.0)
        speedup = speedup if rng.random() < 0.5 else 1 / speedup
        c = scaled(THEN, matmul_1=base, matmul_all=base * speedup, copy_gbps=base, dispatch=base)
        assert not compare(THEN, c).usable


def test_a_machine_that_changed_unevenly_or_in_cores_is_refused():
    # a neighbour burning a core: one thread as fast, all threads half as fast
    burning = compare(THEN, scaled(THEN, matmul_all=0.5))
    assert not burning.usable and "matmul on 2 threads x0.50" in burning.reason
    rng = random.Random(2)
    for _ in range(100):
        uneven = {"matmul_1": rng.uniform(0.9, 1.1), "copy_gbps": rng.uniform(1.5, 3.0)}
        assert not compare(THEN, scaled(THEN, **uneven)).usable
    assert not compare(
        THEN,
        scaled(THEN, **dict.fromkeys(("matmul_1", "matmul_all", "copy_gbps", "dispatch"), 5.0)),
    ).usable
    other = Conditions.from_dict(QUIET | {"threads": 8})
    assert "8" in compare(THEN, other).reason and not compare(THEN, other).usable


def test_a_rescaled_machine_runs_every_rate_faster_and_every_time_shorter():
    m = CPU_DEFAULT.with_(value_update_overhead=0.003)
    fast = m.scaled(2.0)
    for name in RATES:
        assert getattr(fast, name) == pytest.approx(2 * getattr(m, name))
    for name in TIMES:
        if getattr(m, name) is not None:
            assert getattr(fast, name) == pytest.approx(getattr(m, name) / 2)
    assert fast.process_bytes == m.process_bytes and fast.thread_exponent == m.thread_exponent


def test_a_stored_profile_is_checked_against_the_machine_now(monkeypatch):
    shape = tiny_default()
    store_profile_of(CPU_DEFAULT.with_(train_flops=3e10), shape)
    quiet_probe(monkeypatch)
    same = calibrate("cpu", shape)
    assert same.usable and same.machine.train_flops == 3e10 and same.uncertainty == EXACT
    assert same.distance == 0 and "runs as when profiled" in same.note and "±15%" in same.note
    quiet_probe(
        monkeypatch,
        {**QUIET, "matmul_1": 30.0, "matmul_all": 55.0, "copy_gbps": 4.0, "dispatch_us": 4.0},
    )
    slow = calibrate("cpu", shape)
    assert slow.usable and slow.machine.train_flops == pytest.approx(1.5e10)
    assert "2.00x slower" in slow.note and slow.uncertainty > EXACT
    quiet_probe(monkeypatch, {**QUIET, "matmul_all": 50.0})  # a core burnt by a neighbour
    refused = calibrate("cpu", shape)
    assert not refused.usable and refused.machine is CPU_DEFAULT
    assert "refused" in refused.note and "matmul on 2 threads" in refused.note


def test_a_profile_that_records_no_conditions_is_refused(monkeypatch):
    path = store_profile_of(CPU_DEFAULT, tiny_default())
    raw = json.loads(path.read_text())
    raw.pop("conditions")
    path.write_text(json.dumps(raw))
    quiet_probe(monkeypatch)
    c = calibrate("cpu", tiny_default())
    assert not c.usable and "records no conditions" in c.note


def shape(layers, hidden, inter, vocab=512) -> ModelShape:
    return ModelShape(f"L{layers}h{hidden}", layers, hidden, inter, 4, 2, vocab)


def test_another_shapes_profile_comes_from_the_closest_with_a_wider_uncertainty(monkeypatch):
    quiet_probe(monkeypatch)
    target = shape(4, 256, 704, 359)
    near, far = shape(4, 192, 512, 512), shape(2, 128, 344, 32000)
    store_profile_of(CPU_DEFAULT.with_(train_flops=1e10), far)  # sorts first by name
    store_profile_of(CPU_DEFAULT.with_(train_flops=2e10), near)
    assert shape_distance(target, near) < shape_distance(target, far)
    c = calibrate("cpu", target)
    assert c.machine.train_flops == 2e10 and c.distance == pytest.approx(
        shape_distance(target, near)
    )
    assert "measured on shape L4-h192-f512" in c.note and "closest" in c.note
    assert c.uncertainty > EXACT + 0.1
    store_profile_of(CPU_DEFAULT.with_(train_flops=4e10), target)
    assert calibrate("cpu", target).uncertainty == EXACT  # its own shape: the narrowest


def test_shape_distance_is_a_metric_of_log_ratios():
    rng = random.Random(3)
    shapes = [
        shape(
            rng.randint(1, 32),
            rng.choice([64, 128, 256, 512, 1024]),
            rng.randint(128, 4096),
            rng.randint(256, 64000),
        )
        for _ in range(30)
    ]
    for a in shapes:
        assert shape_distance(a, a) == 0
        for b in shapes:
            assert shape_distance(a, b) == pytest.approx(shape_distance(b, a))
            for c in shapes[:5]:
                assert shape_distance(a, c) <= shape_distance(a, b) + shape_distance(b, c) + 1e-9


def test_auto_profiles_first_where_nothing_is_usable_and_uses_what_it_measured(
    tmp_path, monkeypatch
):
    quiet_probe(monkeypatch)
    asked = []

    def profiler(device, shp, say):
        asked.append(shp)
        store_profile_of(CPU_DEFAULT.with_(train_flops=7e10), shp, device)

    said = []
    c = calibration_for("cpu", tiny_default(), None, profiler, said.append)
    assert asked == [tiny_default()] and c.usable and c.machine.train_flops == 7e10
    assert "profiling first" in said[0]
    # a usable one now: no second profile; without a profiler, the defaults, said so
    assert calibration_for("cpu", tiny_default(), None, profiler).usable and len(asked) == 1
    other = calibration_for("cpu", named_shape("7B"), None, None)
    assert other.usable and other.distance > 0  # the closest shape, scaled
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "empty"))
    bare = calibration_for("cpu", tiny_default(), None, None)
    assert not bare.usable and "predictions ±60%" in bare.note
    d, lines = decide(auto_config(tmp_path), CLUSTERS["cpu2"](), profiler, said.append)
    assert len(asked) == 2 and "train_flops" not in lines[0] and d.machine.train_flops == 7e10


def test_plan_auto_and_strategy_auto_rank_the_same_candidates_local_included(tmp_path, monkeypatch):
    from placerl.placement.auto.plan import here, run_search

    quiet_probe(monkeypatch)
    store_profile_of(CPU_DEFAULT, tiny_default())
    cfg = auto_config(tmp_path, "placement.num_workers=2", "placement.threads_per_worker=1")
    shown, _ = run_search(cfg, None, None)
    d, _ = decide(cfg, here(cfg)[0])
    names = [s.name for s in shown.ranked if s.feasible]
    assert "local" in names and [s.name for s in d.result.ranked if s.feasible] == names
    assert d.state.name == names[0]


def test_a_machine_is_the_same_dataclass_after_the_round_trip():
    m = CPU_DEFAULT.scaled(1.3)
    assert Machine(**json.loads(json.dumps(m.__dict__))) == m


def adapter(path, base) -> str:
    """A LoRA adapter directory (peft's layout: no config.json) over ``base``."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    return str(path)


def test_an_adapters_shape_is_its_bases_through_a_chain_of_adapters(tiny_model_dir, tmp_path):
    from placerl.placement.cost.shapes import model_shape, shape_from_dir

    base = shape_from_dir(tiny_model_dir)
    sft = adapter(tmp_path / "sft" / "policy", tiny_model_dir)
    dpo = adapter(tmp_path / "dpo" / "policy", sft)  # an adapter over an adapter
    for path in (sft, dpo):
        got = model_shape(path)
        assert (got.layers, got.hidden, got.vocab, got.params) == (
            base.layers,
            base.hidden,
            base.vocab,
            base.params,
        )
    circle = tmp_path / "circle"
    adapter(circle, circle)
    with pytest.raises(UserError, match="circle"):
        model_shape(circle)


def test_a_model_whose_shape_cannot_be_read_is_an_error_naming_it(tmp_path, capsys):
    from placerl.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    missing_base = adapter(tmp_path / "orphan", tmp_path / "gone")
    for path, said in ((empty, "no config.json"), (missing_base, "is not a directory")):
        for command in (["plan", "--auto"], ["profile"]):
            cfg = tmp_path / "c.yaml"
            cfg.write_text("stage: grpo\nrollout: {samples_per_prompt: 2}\n")
            args = [command[0], str(cfg), f"model.path={path}", *command[1:]]
            assert main(args) == 2
            err = capsys.readouterr().err
            assert said in err and str(path) in err and "Traceback" not in err


def test_profile_and_plan_auto_read_an_adapters_base(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from placerl.cli import main
    from placerl.placement.cost.shapes import shape_from_dir

    quiet_probe(monkeypatch)
    store_profile_of(CPU_DEFAULT, shape_from_dir(tiny_model_dir))
    dpo = adapter(tmp_path / "dpo", adapter(tmp_path / "sft", tiny_model_dir))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stage: grpo\nrollout: {samples_per_prompt: 2}\n")
    assert main(["profile", str(cfg), f"model.path={dpo}"]) == 0
    assert "reusing the profile of" in capsys.readouterr().out  # the base's shape: stored
    assert main(["plan", str(cfg), f"model.path={dpo}", "--auto"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"({shape_from_dir(tiny_model_dir).params / 1e6:.1f}M params)" in out
    assert "tiny-llama" not in out and "reused;" in out
