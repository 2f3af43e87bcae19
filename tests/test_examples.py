"""Every example config runs (a few steps on the tiny model), as a user would run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from placerl.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_there_is_one_example_per_stage():
    stages = {"sft", "rm", "ppo", "grpo", "rloo", "dpo", "online_dpo", "rso", "brain"}
    stages |= {"dapo", "reinforce_pp", "reinforce_pp_baseline"}
    stages |= {"gspo", "gspo_token", "cispo"}  # grpo.policy_loss
    assert {p.stem for p in EXAMPLES} >= stages


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(example, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # examples name their data relative to the repository root
    monkeypatch.syspath_prepend(str(ROOT))  # examples.rewards:digits_match
    overrides = [
        f"model.path={tiny_model_dir}",
        f"run_dir={tmp_path / 'run'}",
        "trainer.steps=2",
        "trainer.batch_size=4",
        "trainer.progress=false",
        "data.num_eval=4",
        "rollout.max_new_tokens=4",
    ]
    if example.stem.startswith("ppo"):  # the example's reward model comes from the rm stage
        overrides.append("reward.model=null")
    assert main(["train", str(example), *overrides]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    assert main(["plot", str(tmp_path / "run")]) == 0


def test_chat_formatted_sft_data(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args = [
        "train",
        str(ROOT / "examples" / "sft.yaml"),
        f"model.path={tiny_model_dir}",
        f"run_dir={tmp_path / 'run'}",
        "data.train=examples/data/chat_sft.jsonl",
        "data.max_len=48",
        "trainer.steps=2",
        "trainer.batch_size=4",
        "trainer.progress=false",
        "data.num_eval=4",
    ]
    assert main(args) == 0, capsys.readouterr().err
