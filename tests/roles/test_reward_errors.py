"""A reward function's failures are reported as its own, and it imports like a user expects."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from placerl.errors import UserError
from placerl.roles.reward import (
    MAX_ABS_SCORE,
    ModelReward,
    RuleReward,
    check_scores,
    import_reward_function,
)
from placerl.types import Field

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "scores,scale",
    [([1e38], 1.0), ([1e39], 1.0), ([1e30], 1e10), ([1.0], float("inf")), ([-2e15], 1.0)],
)
def test_scores_that_overflow_float32_statistics_name_the_reward(scores, scale):
    with pytest.raises(UserError, match="beyond") as err:
        check_scores(scores, 1, "my_rewards:score", scale)
    assert err.value.where == "my_rewards:score"


def test_large_but_safe_scores_pass():
    expected = torch.tensor([MAX_ABS_SCORE, -1.0]).tolist()
    assert check_scores([MAX_ABS_SCORE, -1.0], 2, "r").tolist() == expected


def _batch(rows: int = 2) -> dict:
    return {
        Field.RESPONSE_IDS: torch.ones(rows, 3, dtype=torch.long),
        Field.RESPONSE_MASK: torch.ones(rows, 3, dtype=torch.long),
        Field.INPUT_IDS: torch.ones(rows, 5, dtype=torch.long),
        Field.ATTENTION_MASK: torch.ones(rows, 5, dtype=torch.long),
    }


class _Tokenizer:
    pad_token_id = 0

    def batch_decode(self, ids, skip_special_tokens=True):
        return ["x" * len(row) for row in ids]


def test_real_ctrl_c_during_the_reward_stays_an_interrupt():
    """A SIGINT that arrives while the reward runs is the user's Ctrl-C (exit 130 and the
    resume command), not the reward's failure."""

    def slow(completions, **_):
        os.kill(os.getpid(), signal.SIGINT)
        return [0.0] * len(completions)

    reward = RuleReward(slow, _Tokenizer(), "slow:reward")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ray may change it
    try:
        with pytest.raises(KeyboardInterrupt):
            reward.score(_batch(), ["p", "p"], {})
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)


def test_reward_model_with_non_finite_scores_is_named():
    class Broken(torch.nn.Module):
        """A scalar head that answers inf at every position (sequence_scores reads the
        ``score`` head's output at the last attended token)."""

        def __init__(self):
            super().__init__()
            self.score = torch.nn.Linear(1, 1)
            torch.nn.init.constant_(self.score.weight, float("inf"))
            torch.nn.init.zeros_(self.score.bias)
            self.config = type("Config", (), {"pad_token_id": 0})()

        def forward(self, input_ids, attention_mask, position_ids):
            values = self.score(torch.ones(*input_ids.shape, 1))
            return type("Out", (), {"logits": values[:, -1]})()

    reward = ModelReward(Broken(), name="runs/rm/reward_model")
    with pytest.raises(UserError, match="index 0 is inf") as err:
        reward.score(_batch(), ["p", "p"], {})
    assert "runs/rm/reward_model" in err.value.where


@pytest.fixture
def user_sys_path(monkeypatch):
    """``sys.path`` as the ``placerl`` console script has it: neither the repository root
    nor the working directory on it (pytest puts the root there for ``tests.*`` imports)."""
    root = str(ROOT)
    kept = [p for p in sys.path if p not in ("", ".", root) and Path(p).resolve() != ROOT]
    monkeypatch.setattr(sys, "path", kept)
    for name in [m for m in sys.modules if m == "examples" or m.startswith("examples.")]:
        monkeypatch.delitem(sys.modules, name)


def test_examples_rewards_imports_from_the_repository_root(user_sys_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    fn = import_reward_function("examples.rewards:digits_match")
    assert fn(["123"], ["rev 321="], answer=["123"]) == [1.0]


def test_rewards_py_next_to_the_user_imports(user_sys_path, monkeypatch, tmp_path):
    name = f"rewards_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text("def score(completions, **_):\n    return [1.0]\n")
    monkeypatch.chdir(tmp_path)
    assert import_reward_function(f"{name}:score")(["a"]) == [1.0]


def test_import_failure_says_where_it_looked_and_how_to_fix_it(
    user_sys_path, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        import_reward_function("my_missing_rewards:score")
    assert str(tmp_path) in err.value.message and "PYTHONPATH" in err.value.message
    assert err.value.where == "reward.function"


def test_a_module_that_fails_while_importing(user_sys_path, tmp_path, monkeypatch):
    name = f"broken_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"raised SystemExit\(3\)"):
        import_reward_function(f"{name}:score")
