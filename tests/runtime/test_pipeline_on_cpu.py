"""The experience pipeline: staleness 0 is today's synchronous step bit for bit; larger bounds
run one batch ahead on a shadow rollout copy, tag and bound each batch's staleness, correct
stale batches with the trainer's log-probs, and train the same whether or not a thread runs
the rollout."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.runtime.launch import ThreadLauncher
from placerl.runtime.pipeline import ExperiencePipeline
from placerl.runtime.sync.transport import checksum
from placerl.stages.online import OnlineStage
from placerl.timing import PhaseTimer
from placerl.types import Field
from tests.conftest import fast_overrides

EXTRA = {
    "grpo": ("reward.function=tests.conftest:length_reward", "grpo.kl_coef=0.05"),
    "ppo": ("reward.function=tests.conftest:length_reward", "ppo.minibatches=2"),
}


def _stage(model_dir, tmp_path, stage, staleness=0, extra=(), monkeypatch=None, **cfg_fields):
    overrides = [
        *fast_overrides(model_dir, tmp_path / "run", stage),
        *EXTRA[stage],
        f"placement.max_staleness={staleness}",
        *extra,
        *(f"staleness.{key}={value}" for key, value in cfg_fields.items()),
    ]
    cfg = load_config(None, overrides, RunConfig)
    torch.manual_seed(cfg.seed)
    return OnlineStage(cfg)


def _synchronous_step(stage, step: int) -> dict:
    """generate → experience → learn, back to back: the algorithm's on-policy step."""
    timer, prompts = PhaseTimer(), stage.next_prompts()
    batch = stage.roles.rollout.generate(prompts.ids, prompts.mask)
    batch = stage.algorithm.experience(stage.roles, batch, prompts, timer)
    return stage.algorithm.learn(stage.roles, batch, timer, step)


def _comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "pipeline/"))}


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_staleness_zero_reproduces_the_synchronous_step_bitwise(tiny_model_dir, tmp_path, stage):
    today = _stage(tiny_model_dir, tmp_path / "a", stage)
    piped = _stage(tiny_model_dir, tmp_path / "b", stage)
    for step in range(3):
        expected = _synchronous_step(today, step)
        got = piped.step(step, PhaseTimer())
        assert got["pipeline/staleness"] == 0.0
        assert _comparable(got) == expected, f"step {step} differs"
    for name, model in today.trained_models().items():
        assert checksum(model) == checksum(piped.trained_models()[name]), name
    assert piped.roles.rollout.model is piped.policy, "staleness 0 needs no shadow copy"


def _trajectory(stage, steps=4):
    timer, out = PhaseTimer(), []
    for step in range(steps):
        out.append(stage.step(step, timer))
        timer.pop()
    return out


@pytest.mark.parametrize(
    "max_staleness,sync_every,expected",
    [
        (1, 1, [0, 1, 1, 1]),  # one batch ahead, weights after every update
        (2, 2, [0, 1, 2, 1]),  # weights every second update
        (1, 3, [0, 1, 1, 1]),  # a sync is forced rather than exceed the bound
        (2, 3, [0, 1, 2, 1]),
    ],
)
def test_staleness_is_tagged_and_never_exceeds_the_bound(
    tiny_model_dir, tmp_path, monkeypatch, max_staleness, sync_every, expected
):
    stage = _stage(
        tiny_model_dir, tmp_path, "grpo", max_staleness, monkeypatch=monkeypatch,
        sync_every=sync_every,
    )  # fmt: skip
    assert stage.roles.rollout.model is not stage.policy, "samples must come from a copy"
    staleness = [m["pipeline/staleness"] for m in _trajectory(stage)]
    assert staleness == expected


def test_stale_batches_use_trainer_log_probs_and_truncated_is(tiny_model_dir, tmp_path):
    # two minibatches: π_old is needed beyond the update's first forward, so it is recomputed
    stage = _stage(tiny_model_dir, tmp_path, "grpo", staleness=1, extra=["grpo.minibatches=2"])
    assert stage.algorithm.needs.old_log_probs == "trainer"
    seen = []
    learn = stage.algorithm.learn

    def spy(roles, batch, timer, step):
        seen.append(batch.clone())
        return learn(roles, batch, timer, step)

    stage.algorithm.learn = spy
    metrics = _trajectory(stage, steps=3)
    fresh, stale = seen[0], seen[2]
    assert Field.ROLLOUT_LOG_PROBS not in fresh.keys()  # noqa: SIM118 (TensorDict)
    assert "actor/is_weight_mean" not in metrics[0]
    assert torch.equal(stale[Field.STALENESS], torch.ones(stale.batch_size[0], dtype=torch.long))
    mask = stale[Field.RESPONSE_MASK].bool()
    sampler, trainer = stale[Field.ROLLOUT_LOG_PROBS][mask], stale[Field.OLD_LOG_PROBS][mask]
    assert not torch.allclose(sampler, trainer, atol=1e-6), "the trainer moved: ratios ≠ 1"
    torch.testing.assert_close(sampler, trainer, atol=0.5, rtol=0)  # …but one small update
    assert 0 < metrics[2]["actor/is_weight_mean"] <= 2.0


def test_a_single_pass_update_takes_old_log_probs_from_its_own_forward(tiny_model_dir, tmp_path):
    """1 epoch × 1 minibatch: π_old is the policy of the update's forward, so stale batches
    need no recompute pass, and training is the same as with one."""
    fused = _stage(tiny_model_dir, tmp_path / "a", "grpo", staleness=1)
    recomputed = _stage(tiny_model_dir, tmp_path / "b", "grpo", staleness=1)
    assert fused.algorithm.needs.old_log_probs == "update"
    recomputed.algorithm.needs = dataclasses.replace(
        recomputed.algorithm.needs, old_log_probs="trainer"
    )
    recomputed.algorithm.objective = dataclasses.replace(
        recomputed.algorithm.objective, old_from_current=False
    )
    timer = PhaseTimer()
    for step in range(3):
        got = fused.step(step, timer)
        phases = timer.pop()
        want = recomputed.step(step, PhaseTimer())
        assert "time/old_log_probs" not in phases, "no separate forward for π_old"
        for key in ("loss/policy", "actor/is_weight_mean", "actor/grad_norm"):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (step, key)
    assert "actor/is_weight_mean" in got, "the last batch is stale and reweighted"
    for name, model in fused.trained_models().items():
        other = recomputed.trained_models()[name]
        for (key, a), b in zip(model.state_dict().items(), other.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name}.{key}")


def test_only_sampling_runs_ahead_values_come_from_the_live_critic(tiny_model_dir, tmp_path):
    stage = _stage(tiny_model_dir, tmp_path, "ppo", staleness=1)
    critic, seen = stage.roles.critic, []
    values = critic.values

    def spy(batch):  # values must be read after the critic's previous update, not before
        seen.append(int(critic.scheduler.last_epoch))  # updates done so far
        return values(batch)

    critic.values = spy
    metrics = _trajectory(stage, steps=3)
    assert [m["pipeline/staleness"] for m in metrics] == [0, 1, 1]
    assert seen == [0, 1, 2], "values of batch k read after k critic updates"


def test_a_rollout_thread_trains_exactly_like_inline_launches(tiny_model_dir, tmp_path):
    inline = _stage(tiny_model_dir, tmp_path / "a", "grpo", staleness=1)
    threaded = _stage(tiny_model_dir, tmp_path / "b", "grpo", staleness=1)
    threaded.pipeline.launcher = ThreadLauncher()
    try:
        a, b = _trajectory(inline, 3), _trajectory(threaded, 3)
    finally:
        threaded.pipeline.close()
    assert [_comparable(m) for m in a] == [_comparable(m) for m in b]
    assert any(k.startswith("time/ahead/generate") for k in b[1])
    assert checksum(inline.policy) == checksum(threaded.policy)


def test_pipeline_refuses_staleness_without_a_rollout_copy():
    with pytest.raises(ValueError, match="rollout copy"):
        ExperiencePipeline(None, None, lambda: None, max_staleness=1)
