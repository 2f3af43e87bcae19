"""Exact resume: stop after step k, resume to n, and end bitwise equal to a straight run to n."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.trainer import train
from tests.conftest import fast_overrides

LENGTH_REWARD = "reward.function=tests.conftest:length_reward"


def _weights(directory):
    return load_file(next(directory.glob("*.safetensors")))


def _run(model_dir, run_dir, stage, steps, resume=False, extra=()):
    cfg = load_config(None, [*fast_overrides(model_dir, run_dir, stage, steps), *extra], RunConfig)
    return train(cfg, resume=resume)


@pytest.mark.parametrize(
    "stage,extra",
    [
        ("sft", ()),
        ("rm", ()),
        ("grpo", ("grpo.kl_coef=0.05", "reward.function=tests.conftest:length_reward")),
        ("rloo", ("reward.function=tests.conftest:length_reward",)),
        ("ppo", ("ppo.kl_controller=adaptive", "ppo.minibatches=2", "ppo.epochs=2")),
        ("dpo", ()),
        # 6 pairs, batches of 4: epochs straddle batches; the resumed run reads the reference
        # cache from the checkpoint
        ("dpo", ("data.builtin_size=6", "preference.loss=slic", "preference.sft_coef=0.5")),
        ("online_dpo", ("rollout.samples_per_prompt=2", LENGTH_REWARD)),
        ("rso", (LENGTH_REWARD, "rso.ranking=tournament")),
        ("brain", (LENGTH_REWARD, "brain.proposal=policy", "placement.max_staleness=1")),
    ],
)
def test_resumed_run_is_bitwise_equal_to_straight_run(tiny_model_dir, tmp_path, stage, extra):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    _run(tiny_model_dir, straight, stage, 4, extra=extra)
    _run(tiny_model_dir, stopped, stage, 2, extra=extra)  # "crash" after step 2
    _run(tiny_model_dir, stopped, stage, 4, resume=True, extra=extra)

    names = (
        ["reward_model"] if stage == "rm" else ["policy"] + (["critic"] if stage == "ppo" else [])
    )
    for name in names:
        a, b = _weights(straight / name), _weights(stopped / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
        before = _weights(tiny_model_dir) if stage != "rm" else None
        if before is not None and name == "policy":
            assert any(not torch.equal(a[k], before[k]) for k in a), "training changed nothing"

    steps_logged = [
        line for line in (stopped / "metrics.jsonl").read_text().splitlines() if '"step": 3' in line
    ]
    assert len(steps_logged) == 1, "resume must not duplicate metric lines"


def test_fresh_run_refuses_to_overwrite_checkpoints(tiny_model_dir, tmp_path):
    from placerl.errors import UserError

    _run(tiny_model_dir, tmp_path / "run", "sft", 1)
    with pytest.raises(UserError, match="--resume"):
        _run(tiny_model_dir, tmp_path / "run", "sft", 2)


def test_a_resumed_run_has_one_tensorboard_point_per_step(tiny_model_dir, tmp_path):
    """Issue 21.8: the steps logged after the last checkpoint by a crashed run are logged
    again by the resumed one; TensorBoard keeps each step once."""
    import shutil

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    run_dir = tmp_path / "run"
    tb = ("trainer.report_to=[tensorboard]", "trainer.save_every=2", "trainer.eval_every=0")
    _run(tiny_model_dir, run_dir, "sft", 3, extra=tb)
    *_, last = sorted((run_dir / "checkpoints").glob("step_*"))
    shutil.rmtree(last)  # as if killed after logging step 3, before its checkpoint
    _run(tiny_model_dir, run_dir, "sft", 3, resume=True, extra=tb)
    points = []
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            points += [(value.tag, event.step) for value in event.summary.value]
    assert len(points) == len(set(points)), "a step has two TensorBoard points"
    assert sorted(s for tag, s in points if tag == "loss/sft") == [1, 2, 3]
