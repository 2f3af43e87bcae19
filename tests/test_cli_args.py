"""Flags and ``key=value`` overrides in any order, for every subcommand (issue 21, point 4)."""

from __future__ import annotations

import itertools
import random

import pytest

from placerl.cli import parse

# (command, its positionals, words of flags, overrides, what the flags must set)
CASES = [
    ("train", ["grpo.yaml"], [["--resume"], ["--run-dir", "r"], ["--allow-config-change"]],
     {"resume": True, "run_dir": "r", "allow_config_change": True}),
    ("plan", ["grpo.yaml"], [["--auto"], ["--top", "3"], ["--json"]],
     {"auto": True, "top": 3, "json": True}),
    ("profile", ["grpo.yaml"], [["--force"], ["--out", "p.json"]],
     {"force": True, "out": "p.json"}),
]  # fmt: skip
OVERRIDES = ["model.path=m", "trainer.steps=10", "run_dir=x", "optim.lr=-1e-5"]


def _orders(positionals, flags, seed, n=40):
    """Random interleavings: the config first among the positionals, flags anywhere."""
    rng = random.Random(seed)
    for _ in range(n):
        overrides = rng.sample(OVERRIDES, rng.randint(0, len(OVERRIDES)))
        items = [[w] for w in overrides] + [list(f) for f in flags]
        rng.shuffle(items)
        cut = rng.randint(0, len(items))  # flags (not overrides) may precede the config
        head = [i for i in items[:cut] if i[0].startswith("-")]
        tail = [i for i in items if i not in head]
        words = [w for i in [*head, positionals, *tail] for w in i]
        yield [w for w in words if w in overrides], words


@pytest.mark.parametrize("command, positionals, flags, expected", CASES)
def test_flags_and_overrides_in_any_order(command, positionals, flags, expected):
    for seed in range(5):
        for overrides, words in _orders(positionals, flags, seed):
            args = parse([command, *words])
            assert args.config == positionals[0], words
            assert args.overrides == overrides, words  # the order given: later wins
            assert {k: getattr(args, k) for k in expected} == expected, words


def test_the_issue_commands_parse():
    args = parse(["plan", "grpo.yaml", "--auto", "model.path=m"])
    assert args.auto and args.overrides == ["model.path=m"]
    args = parse(["train", "g.yaml", "--resume", "run_dir=r", "trainer.steps=10"])
    assert args.resume and args.overrides == ["run_dir=r", "trainer.steps=10"]


@pytest.mark.parametrize(
    "argv, word",
    [
        (["train", "g.yaml", "a=1", "--resum3"], "--resum3"),
        (["plot", "runs/x", "a=1"], "a=1"),  # plot takes no overrides
        (["make-model", "m", "--hidden", "64", "x=1"], "x=1"),
    ],
)
def test_what_no_command_takes_is_a_usage_error_of_that_command(argv, word, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"placerl {argv[0]}: error: unrecognized arguments: {word}" in err


@pytest.mark.parametrize("command", ["demo", "plot", "make-model"])
def test_commands_without_overrides_take_flags_before_or_after(command):
    positional = {"demo": [], "plot": ["runs/x"], "make-model": ["m"]}[command]
    flag = {"demo": ["--quick"], "plot": [], "make-model": ["--layers", "2"]}[command]
    for words in itertools.permutations([positional, flag]):
        parse([command, *[w for part in words for w in part]])
