"""The policy-optimisation family (issue 23) is wired: its config switches are validated with a
message that names the key and the allowed values (exit 2), and each example runs the loss and
the advantages its YAML names (recorded through the registries), DAPO with its four parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from placerl.algos.registry import POLICY_LOSSES, TOKEN_ADVANTAGE_ESTIMATORS
from placerl.cli import main
from tests.conftest import fast_overrides

ROOT = Path(__file__).resolve().parents[1]


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def _train(tmp_path, model_dir, stage, *extra) -> list[str]:
    config = tmp_path / "empty.yaml"
    config.write_text("# everything comes from overrides\n")
    return ["train", str(config), *fast_overrides(model_dir, tmp_path / "run", stage), *extra]


@pytest.mark.parametrize(
    "override, names",
    [
        ("grpo.policy_loss=gspo_seq", ["ppo_clip", "gspo", "gspo_token", "cispo"]),
        ("stage=reinforce_pp_base", ["reinforce_pp", "reinforce_pp_baseline", "dapo"]),
        ("grpo.loss_agg=sum", ["token-mean", "seq-mean-token-mean"]),
        ("reinforce_pp.gamma=1.5", ["less than or equal to 1"]),
        ("dapo.dynamic_sampling.max_rounds=0", ["greater than 0"]),
        ("dapo.overlong.cache_length=0", ["greater than 0"]),
        ("dapo.overlong.penalty_factor=-1", ["greater than or equal to 0"]),
    ],
)
def test_a_bad_switch_names_its_key_and_the_allowed_values(
    capsys, tmp_path, tiny_model_dir, override, names
):
    key, value = override.split("=")
    code, err = _cli(capsys, *_train(tmp_path, tiny_model_dir, "dapo", override))
    assert code == 2, err
    assert key in err and value in err and "Traceback" not in err
    for name in names:
        assert name in err


def test_unknown_dapo_key_is_refused(capsys, tmp_path, tiny_model_dir):
    code, err = _cli(capsys, *_train(tmp_path, tiny_model_dir, "dapo", "dapo.max_round=3"))
    assert code == 2 and "max_round" in err and "Traceback" not in err


def test_dapo_band_wider_than_the_budget_is_refused(capsys, tmp_path, tiny_model_dir):
    args = _train(tmp_path, tiny_model_dir, "dapo", "dapo.overlong.cache_length=9")
    code, err = _cli(capsys, *args)  # fast_overrides: rollout.max_new_tokens=4
    assert code == 2 and "dapo.overlong.cache_length=9" in err
    assert "rollout.max_new_tokens (4)" in err


@pytest.mark.parametrize("stage", ["dapo", "reinforce_pp_baseline"])
def test_grouped_stages_need_two_samples_per_prompt(capsys, tmp_path, tiny_model_dir, stage):
    args = _train(tmp_path, tiny_model_dir, stage, "rollout.samples_per_prompt=1")
    code, err = _cli(capsys, *args)
    assert code == 2 and "rollout.samples_per_prompt" in err and stage in err


def _recording(monkeypatch, registry, seen: list[str]) -> None:
    """Wrap every function of ``registry`` so a call records its name."""
    for name in registry.names():
        real = registry.get(name)

        def wrapped(*args, _real=real, _name=name, **kwargs):
            seen.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setitem(registry._items, name, wrapped)


# example → (policy loss it runs, token advantage estimator it runs, or None)
FAMILY = {
    "gspo": ("gspo", None),
    "gspo_token": ("gspo_token", None),
    "cispo": ("cispo", None),
    "dapo": ("ppo_clip", None),
    "reinforce_pp": ("ppo_clip", "reinforce_pp"),
    "reinforce_pp_baseline": ("ppo_clip", "reinforce_pp_baseline"),
}


@pytest.mark.parametrize("example", sorted(FAMILY))
def test_each_example_runs_the_loss_it_names(
    example, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))  # tests.conftest:length_reward
    losses: list[str] = []
    estimators: list[str] = []
    _recording(monkeypatch, POLICY_LOSSES, losses)
    _recording(monkeypatch, TOKEN_ADVANTAGE_ESTIMATORS, estimators)
    run = tmp_path / "run"
    args = [
        "train",
        str(ROOT / "examples" / f"{example}.yaml"),
        f"model.path={tiny_model_dir}",
        f"run_dir={run}",
        "trainer.steps=2",
        "trainer.batch_size=4",
        "trainer.progress=false",
        "data.num_eval=4",
        "rollout.max_new_tokens=4",
        "reward.function=tests.conftest:length_reward",  # signal from a random policy
    ]
    assert main(args) == 0, capsys.readouterr().err
    loss, estimator = FAMILY[example]
    assert losses and set(losses) == {loss}
    assert set(estimators) == ({estimator} if estimator else set())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward/mean" in r]
    assert len(train_rows) == 2
    if example == "dapo":  # dynamic sampling and overlong shaping report every step
        for r in train_rows:
            assert 1 <= r["dynamic_sampling/rounds"] <= 3
            assert 0.0 <= r["dynamic_sampling/filtered_share"] <= 1.0
            assert "reward/overlong_penalty" in r and "response/truncated_share" in r
