"""``placement.strategy: auto`` runs the offline stages (issue 22): the planner's pick — the
one-process plan or data-parallel Flatten on Ray workers — with its settings, to the end, and
trains as an explicit run of that pick. Which plan wins is set by the stored profile (the
planner's constants), not by this machine's load: a test never asserts timings."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from safetensors.torch import load_file

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.placement.cost.machine import CPU_DEFAULT
from placerl.placement.cost.workload import policy_shape
from placerl.trainer import train
from tests.conftest import fast_overrides
from tests.placement.placement_helpers import quiet_probe, store_profile_of

AUTO = ["placement.strategy=auto", "placement.num_workers=2", "placement.threads_per_worker=1"]
AUTO += ["placement.device=cpu", "placement.replan_after=0", "data.num_eval=0"]
AUTO += ["trainer.batch_size=4", "trainer.save_every=0"]


def _run(tiny_model_dir, tmp_path, monkeypatch, stage: str, machine, name: str):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))
    overrides = [*fast_overrides(tiny_model_dir, tmp_path / name, stage, 3), *AUTO]
    cfg = load_config(None, overrides, RunConfig)
    quiet_probe(monkeypatch)  # the stored profile's conditions hold now
    store_profile_of(machine, policy_shape(cfg))
    out = io.StringIO()
    train(cfg, console=Console(file=out, width=300))
    state = json.loads((tmp_path / name / "planner.json").read_text())
    return state, " ".join(out.getvalue().split())


def _rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row.get("step", 0) > 0]


def test_auto_picks_the_local_plan_where_workers_cost_more(tiny_model_dir, tmp_path, monkeypatch):
    """A profile whose worker controller costs 10 s a step: the one-process plan wins, runs in
    this process (no workers file) to the end, and says what it applied and why."""
    slow_workers = CPU_DEFAULT.with_(worker_step_overhead=10.0)
    state, log = _run(tiny_model_dir, tmp_path, monkeypatch, "sft", slow_workers, "a")
    assert state["plan"]["strategy"] == "local"
    assert "auto: local" in log and "auto: trainer.micro_batch_size = " in log
    assert not (tmp_path / "a" / "workers.json").exists()
    rows = _rows(tmp_path / "a")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all("planner/predicted_step_s" in r for r in rows)
    assert (tmp_path / "a" / "policy" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("stage", [pytest.param("sft", marks=pytest.mark.sweep), "dpo"])
def test_auto_runs_its_flatten_pick_like_an_explicit_run(
    tiny_model_dir, tmp_path, monkeypatch, stage
):
    """The built-in CPU constants put two 1-thread workers ahead of one process for the tiny
    model: the pick is Flatten over both slots; it runs on Ray to the end and trains as
    ``strategy: flatten`` with the pick's sharding and micro-batch does."""
    pytest.importorskip("ray")
    fast_local = CPU_DEFAULT.with_(step_overhead=30.0)  # the local plan loses, for sure
    state, log = _run(tiny_model_dir, tmp_path, monkeypatch, stage, fast_local, "a")
    plan = state["plan"]
    assert plan["strategy"] == "flatten" and len(plan["groups"][0]["slots"]) == 2
    assert (tmp_path / "a" / "workers.json").is_file()
    assert "placement: flatten all (" in log or "placement: flatten" in log
    actor = plan["roles"]["actor"]
    explicit = ["placement.strategy=flatten", f"placement.sharding={actor['sharding']}"]
    settings = state["settings"]
    if settings.get("micro_batch"):
        explicit.append(f"trainer.micro_batch_size={settings['micro_batch']}")
    base = [*fast_overrides(tiny_model_dir, tmp_path / "b", stage, 3), *AUTO, *explicit]
    train(load_config(None, base, RunConfig))
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [r["step"] for r in a] == [1, 2, 3]
    loss = "loss/sft" if stage == "sft" else "loss/dpo"
    for ra, rb in zip(a, b, strict=True):
        assert ra[loss] == pytest.approx(rb[loss], rel=1e-5, abs=1e-6)
    wa = load_file(tmp_path / "a" / "policy" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "policy" / "model.safetensors")
    for key in wa:
        assert (wa[key] - wb[key]).abs().max() <= 1e-5, key
