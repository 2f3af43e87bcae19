"""torch's threads under strategy local: set on purpose, said at start (issue 21.5)."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from placerl.config import load_config
from placerl.config.placement import PlacementConfig
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.threads import configure_threads, local_threads
from placerl.trainer import train
from tests.conftest import fast_overrides


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


def test_the_knob_then_the_environment_then_every_core(monkeypatch):
    assert local_threads(3, cores=8) == (3, "placement.threads_per_worker")
    assert local_threads(None, cores=8)[0] == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert local_threads(None, cores=8) == (1, "OMP_NUM_THREADS")
    assert local_threads(2, cores=8)[0] == 2  # the config's knob wins
    monkeypatch.setenv("OMP_NUM_THREADS", "two")
    with pytest.raises(UserError, match="OMP_NUM_THREADS='two'"):
        local_threads(None, cores=8)


def test_local_sets_torch_threads_and_ray_strategies_leave_the_controller():
    said = configure_threads(PlacementConfig(threads_per_worker=1))
    assert torch.get_num_threads() == 1
    assert said == "1 torch thread (placement.threads_per_worker)"
    torch.set_num_threads(2)
    said = configure_threads(PlacementConfig(strategy="separate", threads_per_worker=1))
    assert torch.get_num_threads() == 2 and "in the controller" in said


def test_a_local_run_uses_the_knob_and_says_so(tiny_model_dir, tmp_path):
    torch.set_num_threads(2)
    out = io.StringIO()
    overrides = [
        *fast_overrides(tiny_model_dir, tmp_path / "run", "sft", steps=1),
        "placement.threads_per_worker=1",
    ]
    train(load_config(None, overrides, RunConfig), console=Console(file=out, width=200))
    assert torch.get_num_threads() == 1
    first = out.getvalue().splitlines()[0]
    assert "1 torch thread (placement.threads_per_worker)" in first


def test_auto_picking_the_local_plan_sets_the_threads_it_planned_for(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Issue 21.5: under ``strategy: auto`` a local pick computes in this process as ``local``
    does: torch's threads are set from the knob (and said), and the planner's local slot has
    that many threads, not every core."""
    import json

    from placerl.placement.cost.machine import CPU_DEFAULT
    from placerl.placement.cost.workload import policy_shape
    from tests.placement.placement_helpers import quiet_probe, store_profile_of

    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))
    torch.set_num_threads(2)
    overrides = [
        *fast_overrides(tiny_model_dir, tmp_path / "run", "sft", steps=1),
        *["placement.strategy=auto", "placement.threads_per_worker=1", "placement.device=cpu"],
        *["placement.replan_after=0", "data.num_eval=0", "trainer.save_every=0"],
    ]
    cfg = load_config(None, overrides, RunConfig)
    quiet_probe(monkeypatch)
    store_profile_of(CPU_DEFAULT.with_(worker_step_overhead=10.0), policy_shape(cfg))  # local wins
    out = io.StringIO()
    train(cfg, console=Console(file=out, width=300))
    state = json.loads((tmp_path / "run" / "planner.json").read_text())
    assert state["plan"]["strategy"] == "local"
    assert [s["threads"] for g in state["plan"]["groups"] for s in g["slots"]] == [1]
    assert torch.get_num_threads() == 1
    assert "1 torch thread (placement.threads_per_worker)" in out.getvalue()


def test_the_planners_local_slot_reads_the_knob():
    from placerl.placement.plan.cluster import available_cores
    from placerl.placement.plan.config import cluster_for

    def slot_threads(*extra):
        overrides = ["stage=sft", "placement.device=cpu", *extra]
        return cluster_for(load_config(None, overrides, RunConfig)).slots[0].threads

    assert slot_threads("placement.threads_per_worker=1") == 1
    assert slot_threads() == available_cores()
