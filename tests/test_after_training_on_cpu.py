"""The commands after (and before) training (issue 21, point 9): ``placerl init STAGE`` writes
a starter that trains from its own folder, ``placerl generate`` / ``chat`` answer with a run's
policy, ``placerl export RUN --merge`` turns adapters into plain models."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from placerl.cli import main
from placerl.commands.policy_session import find_policy
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.models.loading import load_policy
from placerl.roles.reward import import_reward_function
from placerl.starter import config as starter_config
from placerl.starter import write_starter

ROOT = Path(__file__).resolve().parents[1]
STAGES = list(starter_config.SECTIONS)
FAST = ["trainer.steps=2", "trainer.batch_size=4", "data.num_eval=4", "trainer.progress=false"]
FAST += ["trainer.report_to=[]", "trainer.save_every=1", "rollout.max_new_tokens=4"]


@pytest.mark.parametrize("stage", STAGES)
def test_init_writes_a_valid_commented_config_and_the_data_it_names(stage, tmp_path):
    written = write_starter(stage, tmp_path)
    config = tmp_path / f"{stage}.yaml"
    assert config in written
    cfg = load_config(config, [], RunConfig)
    assert cfg.stage == stage
    for path in filter(None, [cfg.data.train, cfg.data.eval]):
        rows = [json.loads(line) for line in (tmp_path / path).read_text().splitlines()]
        assert rows and all("prompt" in r or "messages" in r for r in rows)
    lines = config.read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
    described = [i for i in keys if lines[i - 1].lstrip().startswith("#")]
    assert described == keys and len(keys) > 20, "every key has its description above it"
    assert yaml.safe_load(config.read_text())["stage"] == stage


@pytest.mark.parametrize("stage", ["grpo", "online_dpo"])
def test_the_starter_reward_imports_from_the_starter_folder(stage, tmp_path, monkeypatch):
    write_starter(stage, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "rewards", raising=False)
    fn = import_reward_function(load_config(f"{stage}.yaml", [], RunConfig).reward.function)
    assert fn(["54321", "12"], [None, None], answer=["54321", "21"]) == [1.0, 0.0]


def test_init_says_which_earlier_runs_a_stage_starts_from(tmp_path, capsys):
    """GRPO's starter starts from the SFT policy, PPO's also from the reward model: init says
    to run them first while they are missing, and not once they exist."""
    assert main(["init", "grpo", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "first: cd" in out and "placerl init sft && placerl train sft.yaml" in out
    assert "grpo.yaml starts from runs/sft/policy" in out
    assert main(["init", "ppo", str(tmp_path / "p")]) == 0
    firsts = [line for line in capsys.readouterr().out.splitlines() if line.startswith("first:")]
    assert len(firsts) == 2 and "init sft" in firsts[0] and "init rm" in firsts[1]
    (tmp_path / "runs" / "sft" / "policy").mkdir(parents=True)
    assert main(["init", "dpo", str(tmp_path)]) == 0
    assert "first:" not in capsys.readouterr().out
    assert main(["init", "sft", str(tmp_path / "s")]) == 0
    assert "first:" not in capsys.readouterr().out


def test_init_never_overwrites_unless_forced(tmp_path, capsys):
    assert main(["init", "sft", str(tmp_path)]) == 0
    (tmp_path / "sft.yaml").write_text("# mine\n")
    assert main(["init", "sft", str(tmp_path)]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert (tmp_path / "sft.yaml").read_text() == "# mine\n"
    assert main(["init", "sft", str(tmp_path), "--force"]) == 0


def quick_start() -> list[list[str]]:
    """The ``placerl`` commands of the README's section on starting from pip, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## A project of your own, from pip\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no section '## A project of your own, from pip'"
    block = re.search(r"```bash\n(.*?)```", match.group(1), re.S).group(1)
    words = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [w[1:] for w in words if w and w[0] == "placerl"]


@pytest.mark.slow
def test_the_readme_quick_start_runs_in_a_folder_outside_the_repository(
    tmp_path, monkeypatch, capsys, tiny_model_dir
):
    """The pip user's path as the README writes it (init, train SFT, generate, init and train
    GRPO, chat), from an empty folder, shortened: a tiny model, 2 steps, 4 new tokens."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "rewards", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != ROOT])
    monkeypatch.setattr("sys.stdin", io.StringIO("rev 12=\n"))
    commands = quick_start()
    assert [c[0] for c in commands] == ["init", "train", "generate", "init", "train", "chat"]
    for words in commands:
        extra = {"train": FAST, "generate": ["--max-new-tokens", "4"]}.get(words[0], [])
        if words[:2] == ["train", "sft.yaml"]:
            extra = [*extra, f"model.path={tiny_model_dir}"]
        if words[0] == "chat":
            extra = ["--max-new-tokens", "2"]
        code = main([*words, *extra])
        out = capsys.readouterr()
        assert code == 0 and "Traceback" not in out.err, f"placerl {' '.join(words)}\n{out.err}"
        if words[0] == "generate":
            assert "prompts as chat template" in out.err and len(out.out.splitlines()) == 1
    assert (tmp_path / "runs" / "grpo" / "policy").is_dir() and (tmp_path / "rewards.py").exists()


def test_generate_reads_stdin_and_finds_a_checkpoint(tmp_path, monkeypatch, capsys, tiny_model_dir):
    run = tmp_path / "run"
    step = run / "checkpoints" / "step_000002" / "policy"
    step.parent.mkdir(parents=True)
    step.symlink_to(tiny_model_dir, target_is_directory=True)
    assert find_policy(run) == (step, "the run's newest checkpoint (step_000002; no policy/ yet)")
    monkeypatch.setattr("sys.stdin", io.StringIO("rev 12=\n\nrev 345=\n"))
    assert main(["generate", str(run), "--raw", "--max-new-tokens", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["rev 12=", "rev 345="]


def test_generate_errors_name_the_problem(tmp_path, capsys, tiny_model_dir):
    assert main(["generate", str(tmp_path), "hi"]) == 2
    assert "no policy here" in capsys.readouterr().err
    assert main(["generate", str(tiny_model_dir), "hi", "--max-new-tokens", "100"]) == 2
    assert "beyond the model's context of 64 tokens" in capsys.readouterr().err


def test_chat_keeps_the_conversation(tmp_path, monkeypatch, capsys, tiny_model_dir):
    monkeypatch.setattr("sys.stdin", io.StringIO("rev 12=\n/reset\nrev 3=\n"))
    assert main(["chat", str(tiny_model_dir), "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.count("policy> ") == 2


@pytest.mark.slow
def test_export_merge_writes_plain_models_for_a_lora_run(tmp_path, capsys, tiny_model_dir):
    from tests.conftest import fast_overrides

    run = tmp_path / "sft"
    overrides = [*fast_overrides(tiny_model_dir, run, "sft", 2), "model.lora.r=4"]
    from placerl.trainer import train

    train(load_config(None, overrides, RunConfig))
    assert main(["export", str(run)]) == 2 and "--merge" in capsys.readouterr().err
    assert main(["export", str(run), "--merge"]) == 0
    merged = run / "policy_merged"
    ids = torch.tensor([[3, 8, 12, 5]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
        ours = load_policy(run / "policy").eval()(input_ids=ids).logits
    torch.testing.assert_close(plain, ours, atol=1e-5, rtol=0)
    assert (merged / "tokenizer.json").exists() and not (merged / "adapter_config.json").exists()
    full = tmp_path / "full"
    train(load_config(None, fast_overrides(tiny_model_dir, full, "sft", 1), RunConfig))
    assert main(["export", str(full), "--merge"]) == 2
    assert "nothing to merge: policy/ already a full model" in capsys.readouterr().err
