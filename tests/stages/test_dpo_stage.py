"""The dpo stage: it learns the pairs, reference log-probs cached per example, metrics, state."""

from __future__ import annotations

import math

import pytest
import torch

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.stages import build_stage
from placerl.timing import PhaseTimer
from placerl.trainer import seed_everything
from tests.conftest import fast_overrides


def _stage(model_dir, tmp_path, *extra):
    overrides = [*fast_overrides(model_dir, tmp_path / "run", "dpo", 10), *extra]
    seed_everything(0)
    return build_stage(load_config(None, overrides, RunConfig))


def test_training_separates_the_pairs_it_trains_on(tiny_model_dir, tmp_path):
    stage = _stage(
        tiny_model_dir,
        tmp_path,
        "data.builtin_size=32",
        "trainer.batch_size=8",
        "optim.lr=3e-3",
        "preference.beta=0.5",
    )
    first = stage.step(0, PhaseTimer())
    assert first["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)  # π = π_ref at the start
    for step in range(1, 30):
        stage.step(step, PhaseTimer())
    seen = stage.algo.evaluate(stage.pairs, stage.cache.get(list(range(len(stage.pairs)))))
    assert seen["eval/preference_accuracy"] >= 0.9
    assert seen["eval/rewards/margin"] > 0.5


def test_step_and_eval_metrics(tiny_model_dir, tmp_path):
    stage = _stage(tiny_model_dir, tmp_path)
    initial = stage.evaluate()
    # the policy is the reference: no margin yet; and the builtin task gives exact match
    assert initial["eval/rewards/margin"] == 0.0 and initial["eval/loss"] == pytest.approx(
        math.log(2)
    )
    assert {"eval/preference_accuracy", "eval/accuracy"} <= initial.keys()
    timer = PhaseTimer()
    metrics = stage.step(0, timer)
    for key in (
        "loss/dpo",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margin",
        "rewards/accuracy",
        "logps/chosen",
        "logps/rejected",
        "throughput/tokens",
        "data/truncated",
    ):
        assert key in metrics, key
    assert metrics["logps/chosen"] < 0
    assert {"time/reference", "time/update"} <= timer.pop().keys()


def test_cached_reference_is_filled_on_first_sight_then_freed(tiny_model_dir, tmp_path):
    # 6 pairs in batches of 4: step 1 sees 4 new, step 2 the last 2 new + 2 of the next epoch
    stage = _stage(tiny_model_dir, tmp_path, "data.builtin_size=6")
    stage.step(0, PhaseTimer())
    assert int(stage.cache.known.sum()) == 4
    assert stage.reference is not None
    stage.step(1, PhaseTimer())
    assert stage.cache.complete
    assert stage.reference is not None  # held-out pairs still need their reference values
    stage.evaluate()
    assert stage.reference is None  # nothing left to compute: memory back
    stage.step(2, PhaseTimer())  # and training goes on from the cache

    state = stage.state_dict()["reference_cache"]
    other = _stage(tiny_model_dir, tmp_path, "data.builtin_size=6")
    other.load_state_dict(stage.state_dict())
    assert torch.equal(other.cache.values, state["values"])
    other.reference = None  # a resumed run reads the checkpoint's values, computes none
    other.step(3, PhaseTimer())
    smaller = _stage(tiny_model_dir, tmp_path, "data.builtin_size=5")
    with pytest.raises(UserError, match="same data"):
        smaller.load_state_dict(stage.state_dict())


def test_cached_and_online_reference_agree(tiny_model_dir, tmp_path):
    """In the first epoch the cache holds exactly what the reference computes online."""
    runs = {}
    for mode in ("cached", "online"):
        stage = _stage(tiny_model_dir, tmp_path / mode, f"preference.reference={mode}")
        runs[mode] = [stage.step(i, PhaseTimer())["loss/dpo"] for i in range(3)]
        assert (stage.cache is None) == (mode == "online")
    assert runs["cached"] == runs["online"]


@pytest.mark.parametrize(
    "loss,extra",
    [
        ("slic", ("preference.margin=2.0",)),
        ("ipo", ("preference.sft_coef=0.1",)),
        ("dpo", ("preference.label_smoothing=0.1", "model.precision=bf16")),
    ],
)
def test_other_losses_run(tiny_model_dir, tmp_path, loss, extra):
    stage = _stage(tiny_model_dir, tmp_path, f"preference.loss={loss}", *extra)
    metrics = stage.step(0, PhaseTimer())
    assert math.isfinite(metrics[f"loss/{loss}"])


def test_loss_options_are_checked_against_the_loss(tmp_path):
    with pytest.raises(UserError, match="margin"):
        load_config(None, ["stage=dpo", "preference.margin=2.0"], RunConfig)
    with pytest.raises(UserError, match="label_smoothing"):
        load_config(
            None, ["stage=dpo", "preference.loss=ipo", "preference.label_smoothing=0.1"], RunConfig
        )
