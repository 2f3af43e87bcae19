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
