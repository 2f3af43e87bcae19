"""Whole computations against numbers worked out by hand (arithmetic in the comments):
PPO's advantages end to end, the Bradley–Terry loss and a reward-model step, the KL metric
that drives the adaptive controller, and the adaptive controller's default target."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from placerl.algos.kl_control import AdaptiveKLController
from placerl.algos.online import experience_metrics
from placerl.algos.ppo import PPO
from placerl.algos.reward_model import RewardModelTraining, bradley_terry_loss
from placerl.config.schema import PPOConfig, RunConfig
from placerl.types import Field

PAD = 1e30  # garbage on padding: never read


def ppo_batch() -> TensorDict:
    """Two responses: row 0 has two tokens, row 1 one (its second position is padding)."""
    return TensorDict(
        {
            Field.RESPONSE_MASK: torch.tensor([[1, 1], [1, 0]]),
            Field.ATTENTION_MASK: torch.tensor([[1, 1, 1], [1, 1, 0]]),
            Field.OLD_LOG_PROBS: torch.tensor([[-1.0, -2.0], [-0.5, PAD]]),
            Field.REF_LOG_PROBS: torch.tensor([[-1.5, -1.0], [-1.0, -PAD]]),
            Field.VALUES: torch.tensor([[0.2, 0.4], [0.1, PAD]]),
            Field.SCORES: torch.tensor([1.0, 0.0]),
        },
        batch_size=[2],
    )


def test_ppo_advantages_from_kl_to_whitened_gae():
    cfg = PPOConfig(kl_coef=0.1, gamma=1.0, lam=0.5, whiten_advantages=True)
    batch = ppo_batch()
    metrics = PPO(cfg).compute_advantages(batch)
    # k1 KL d = log π_old − log π_ref: row 0 [0.5, −1.0], row 1 [0.5]
    # token rewards −β·d, score on the last token: row 0 [−0.05, 0.1 + 1.0], row 1 [−0.05 + 0]
    torch.testing.assert_close(batch[Field.TOKEN_REWARDS], torch.tensor([[-0.05, 1.1], [-0.05, 0]]))
    # GAE, γ = 1, λ = 0.5: row 0 t=1 δ = 1.1 − 0.4 = 0.7, A = 0.7
    #                            t=0 δ = −0.05 + 0.4 − 0.2 = 0.15, A = 0.15 + 0.5·0.7 = 0.5
    #                      row 1 t=0 δ = −0.05 − 0.1 = −0.15, A = −0.15
    # returns A + V: [0.7, 1.1], [−0.05]
    torch.testing.assert_close(batch[Field.RETURNS], torch.tensor([[0.7, 1.1], [-0.05, 0.0]]))
    # whitening over {0.5, 0.7, −0.15}: mean 0.35, deviations 0.15, 0.35, −0.5,
    # unbiased var (0.0225 + 0.1225 + 0.25) / 2 = 0.1975
    std = math.sqrt(0.1975 + 1e-8)
    expected = torch.tensor([[0.15 / std, 0.35 / std], [-0.5 / std, 0.0]])
    torch.testing.assert_close(batch[Field.ADVANTAGES], expected)
    assert metrics["kl/coef"] == pytest.approx(0.1)
    assert metrics["critic/values"] == pytest.approx((0.2 + 0.4 + 0.1) / 3)
    assert metrics["critic/returns"] == pytest.approx((0.7 + 1.1 - 0.05) / 3)


def test_ppo_advantages_use_the_controller_coefficient_of_the_moment():
    cfg = PPOConfig(kl_coef=0.1, kl_controller="adaptive", kl_target=6.0, gamma=1.0, lam=1.0)
    ppo = PPO(cfg)
    ppo.kl_ctl.value = 0.2  # as if the controller had moved β
    batch = ppo_batch()
    ppo.compute_advantages(batch)
    # −0.2·d: row 0 [−0.1, 0.2 + 1.0]
    torch.testing.assert_close(batch[Field.TOKEN_REWARDS][0], torch.tensor([-0.1, 1.2]))


def test_kl_metric_is_the_k1_sum_per_response_averaged_over_the_batch():
    batch = ppo_batch()
    batch[Field.OLD_LOG_PROBS] = torch.tensor([[-1.0, -2.0], [-0.5, PAD]])
    batch[Field.REF_LOG_PROBS] = torch.tensor([[-1.5, -2.5], [-1.0, -PAD]])
    # per response: row 0 0.5 + 0.5 = 1.0, row 1 0.5 -> mean 0.75 nats
    assert experience_metrics(batch)["kl/mean"] == pytest.approx(0.75)


def test_adaptive_target_default_is_a_per_response_kl_of_six_nats():
    assert PPOConfig().kl_target == 6.0
    ctl = AdaptiveKLController(0.05, PPOConfig().kl_target, 10_000)
    # a run at 3 nats per response (half the target) lowers β: e = clip(3/6 − 1) = −0.2,
    # β ← 0.05·(1 − 0.2·32/10000) = 0.04968
    ctl.update(3.0, 32)
    assert ctl.value == pytest.approx(0.05 * (1 - 0.2 * 32 / 10_000))


def test_bradley_terry_hand_values():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    # −log σ(2) = log(1 + e^−2) = 0.126928; −log σ(0) = log 2 = 0.693147; mean 0.410038
    loss = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log(2)) / 2, abs=1e-7)


@pytest.mark.parametrize("micro_batch_size", [None, 1])
def test_reward_model_step_reports_the_bradley_terry_loss_before_its_update(
    tiny_model_dir, micro_batch_size
):
    from placerl.models.loading import load_reward_model, load_tokenizer
    from placerl.models.micro_batches import MicroBatching

    torch.manual_seed(0)
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_reward_model(tiny_model_dir, pad_token_id=tokenizer.pad_token_id)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    training = RewardModelTraining(
        model,
        tokenizer,
        optimizer,
        scheduler,
        max_len=32,
        grad_clip=1.0,
        precision="fp32",
        micro_batching=MicroBatching(rows=micro_batch_size),
    )
    triples = [("rev 12=", "21", "12"), ("rev 345=", "543", "354"), ("rev 6=", "6", "66")]
    with torch.no_grad():
        model.eval()
        chosen, rejected, _ = training._scores(triples)
    expected = bradley_terry_loss(chosen, rejected).item()
    stats = training.step(triples)
    assert stats["loss/reward_model"] == pytest.approx(expected, abs=1e-6)
    assert stats["rm/accuracy"] == pytest.approx(float((chosen > rejected).float().mean()))
    assert stats["rm/margin"] == pytest.approx(float((chosen - rejected).mean()), abs=1e-6)
    with torch.no_grad():
        after, after_rejected, _ = training._scores(triples)
    assert bradley_terry_loss(after, after_rejected).item() < expected  # the step descended


def test_run_config_keeps_the_adaptive_default():
    cfg = RunConfig.model_validate({"stage": "ppo", "ppo": {"kl_controller": "adaptive"}})
    assert cfg.ppo.kl_target == 6.0


def test_experience_metrics_log_the_never_negative_k3_kl_next_to_k1():
    batch = ppo_batch()
    batch[Field.OLD_LOG_PROBS] = torch.tensor([[-1.0, -2.0], [-0.5, PAD]])
    batch[Field.REF_LOG_PROBS] = torch.tensor([[-0.5, -2.5], [-1.0, -PAD]])
    metrics = experience_metrics(batch)
    # d: row 0 [−0.5, 0.5], row 1 [0.5]; k1 sums 0.0 and 0.5; k3 = e^{−d} + d − 1
    assert metrics["kl/mean"] == pytest.approx(0.25)
    k3 = lambda d: math.exp(-d) + d - 1  # noqa: E731
    assert metrics["kl/k3"] == pytest.approx((k3(-0.5) + k3(0.5) + k3(0.5)) / 2)
