"""The demo end to end: every stage runs, and the summary has what the README promises."""

from __future__ import annotations

import json

import pytest

from placerl.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_quick_demo_writes_summary_metrics_plots_and_checkpoints(tmp_path, algo):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--algo", algo, "--quick"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("sft_accuracy", "final_accuracy", "reward_model_accuracy", "seconds"):
        assert key in summary
    assert {"sft", algo} <= summary["seconds"].keys()
    assert (out / algo / "metrics.jsonl").exists()
    assert list((out / algo / "checkpoints").glob("step_*"))
    assert (out / algo / "plots" / "reward.png").exists()
    assert (out / "sft" / "policy" / "model.safetensors").exists()


@pytest.mark.slow
def test_quick_tools_demo_trains_with_and_without_the_tool(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--task", "tools", "--out", str(out), "--quick"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "accuracy_without_tools",
        "accuracy_with_tools_after_sft",
        "accuracy_with_tools_after_rl",
        "seconds",
    ):
        assert key in summary
    assert {"direct", "sft", "grpo"} <= summary["seconds"].keys()
    rows = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert any("env/turns" in r for r in rows), "RL ran episodes"
    assert (out / "grpo" / "samples.jsonl").exists()


def test_the_tools_demo_refuses_ppo(tmp_path, capsys):
    code = main(["demo", "--task", "tools", "--algo", "ppo", "--out", str(tmp_path / "d")])
    assert code == 2 and "--task tools runs grpo or rloo" in capsys.readouterr().err
