"""Every ``placerl`` command of the README's how-to sections runs as written, in order.

The commands are read from README.md itself (the ```bash blocks of the sections below), so a
command edited there is the command tested. Each runs in-process through ``placerl.cli.main``
from the repository root, as a user types it there, with ``sys.path`` as the console script
has it (no repository root on it: ``examples.rewards`` must come from the working directory).
Two kinds of additions keep it short and out of the repository: overrides that make each run
tiny (a 2-layer model, 2 steps of 4 prompts), and every output path (``my_model``,
``runs/...``, also those the example configs name) moved under a temporary directory, the
chain between commands (SFT policy → reward model → PPO) kept.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from placerl.cli import main

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "Training on your own model and data",
    "Placement: where the models run",
    "Preference optimization, offline to online",
)
SHORT = [
    "trainer.steps=2",
    "trainer.batch_size=4",
    "trainer.eval_every=0",
    "trainer.save_every=0",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "data.num_eval=4",
    "data.builtin_size=64",
    "rollout.max_new_tokens=4",
    "rso.num_candidates=4",
    "rso.num_accepted=2",
    "brain.num_samples=2",
]
SHORT_MODEL = ["--hidden", "32", "--layers", "2", "--intermediate", "64"]


def readme_commands() -> list[list[str]]:
    """The ``placerl ...`` lines of the bash blocks of ``SECTIONS``, comments removed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for section in SECTIONS:
        match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.M | re.S)
        assert match, f"README.md has no section '## {section}'"
        for block in re.findall(r"```bash\n(.*?)```", match.group(1), re.S):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                if words and words[0] == "placerl":
                    commands.append(words[1:])
    return commands


class Relocate:
    """Maps the relative output paths a README command names to ``base``."""

    def __init__(self, base: Path):
        self.base = base

    def path(self, value: str) -> str:
        if value == "my_model" or value.startswith("runs/"):
            return str(self.base / value)
        return value

    def arg(self, arg: str) -> str:
        key, sep, value = arg.partition("=")
        return f"{key}={self.path(value)}" if sep else self.path(arg)

    def config_paths(self, config: str) -> list[str]:
        """Overrides that move the paths an example config names (run_dir, reward.model)."""
        data = yaml.safe_load((ROOT / config).read_text(encoding="utf-8")) or {}
        found: list[str] = []

        def walk(node, prefix: str) -> None:
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(value, f"{prefix}{key}.")
                elif isinstance(value, str) and self.path(value) != value:
                    found.append(f"{prefix}{key}={self.path(value)}")

        walk(data, "")
        return found


def shortened(words: list[str], where: Relocate) -> list[str]:
    command, rest = words[0], words[1:]
    if command == "make-model":
        return [command, *map(where.arg, rest), *SHORT_MODEL]
    if command == "plot":
        return [command, *map(where.arg, rest)]
    if command == "generate":
        return [command, *map(where.arg, rest), "--max-new-tokens", "4"]
    config, overrides = rest[0], rest[1:]
    extra = where.config_paths(config)
    given = {o.partition("=")[0] for o in overrides}
    extra = [e for e in extra if e.partition("=")[0] not in given]
    out = [command, config, *extra, *(where.arg(o) for o in overrides)]
    return out if command == "plan" else [*out, *SHORT]


def test_the_readme_sections_have_the_commands_this_test_is_about():
    commands = [" ".join(c) for c in readme_commands()]
    assert any(c.startswith("train examples/ppo.yaml") and "reward.model=" in c for c in commands)
    for example in ("sft", "rm", "grpo", "ppo_interleave", "dpo", "online_dpo", "rso", "brain"):
        assert any(f"examples/{example}.yaml" in c for c in commands), example
    assert any(c.startswith("make-model") for c in commands)
    assert any(c.startswith("plot") for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    kept = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != ROOT]
    monkeypatch.setattr(sys, "path", kept)  # as the console script: the repo root is not there
    for name in [m for m in sys.modules if m == "examples" or m.startswith("examples.")]:
        monkeypatch.delitem(sys.modules, name)
    where = Relocate(tmp_path)
    ran = []
    for words in readme_commands():
        argv = shortened(words, where)
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, f"placerl {' '.join(words)}\n(ran as: {argv})\n{captured.err[-3000:]}"
        assert "Traceback" not in captured.err
        ran.append(words[0])
    assert (tmp_path / "runs" / "ppo" / "policy").is_dir()
    assert (tmp_path / "runs" / "rm" / "reward_model").is_dir()
    assert ran.count("train") >= 10
