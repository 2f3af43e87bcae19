"""The planner covers the online preference stages (issue 20): ``placerl plan --auto`` ranks
local and Separate candidates for online DPO, RSO and BRAIn and picks one, and
``strategy: auto`` (the same search, ``prepare_auto``) applies a pick for each. Before issue 20
these stages refused Separate and any staleness but 0 on Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from placerl.cli import main
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.placement.auto.plan import _DECISIONS, prepare_auto

ROOT = Path(__file__).resolve().parents[2]
ONLINE = ["online_dpo", "rso", "brain"]


def _args(stage: str, tmp_path: Path) -> list[str]:
    return [
        str(ROOT / "examples" / f"{stage}.yaml"),
        f"run_dir={tmp_path / 'run'}",  # no base model there: the planner's fallback shapes
        "placement.device=cpu",
        "placement.max_staleness=1",
    ]


@pytest.mark.parametrize("stage", ONLINE)
def test_plan_auto_ranks_local_and_separate(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))  # the defaults
    args = ["plan", *_args(stage, tmp_path), "--auto", "--no-profile"]
    assert main([*args, "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in raw["candidates"]]
    assert raw["pick"] in names and "local" in names
    assert any(n.startswith("separate") for n in names)  # refused before issue 20
    feasible = [c["predicted"]["step_s"] for c in raw["candidates"] if c["feasible"]]
    assert feasible == sorted(feasible), "candidates are ranked fastest first"
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"workload: {stage}" in out and "pick: " in out


@pytest.mark.parametrize("stage", ONLINE)
def test_strategy_auto_applies_a_pick(stage, tmp_path, monkeypatch):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))
    overrides = [f"stage={stage}", *_args(stage, tmp_path)[1:], "placement.strategy=auto"]
    cfg = load_config(ROOT / "examples" / f"{stage}.yaml", overrides, RunConfig)
    said: list[str] = []
    try:
        applied = prepare_auto(cfg, False, said.append)
        decision = _DECISIONS[str(cfg.run_dir)]
    finally:
        _DECISIONS.pop(str(cfg.run_dir), None)
    assert applied.stage == stage
    assert decision.plan.strategy in ("local", "flatten", "interleave", "separate")
    assert said and said[0].startswith(f"auto: {decision.state.name}, predicted"), said
