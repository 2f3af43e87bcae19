"""``optim.warmup_steps`` counts training steps, as its help says: an RL step of several
minibatches and epochs advances the learning-rate schedule once."""

from __future__ import annotations

import torch

from placerl.config.schema import OptimConfig
from placerl.roles.actor import ActorWorker
from placerl.types import Batch, Field


def test_the_help_says_training_steps_not_optimizer_steps():
    help_text = OptimConfig.model_fields["warmup_steps"].description
    assert "optimizer steps" not in help_text and "training steps" in help_text


def test_one_rl_step_of_four_optimizer_steps_advances_warmup_once():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3)
    actor = ActorWorker(model, OptimConfig(lr=1.0, warmup_steps=4), total_steps=10)
    rows = 8
    batch = Batch({Field.RESPONSE_MASK: torch.ones(rows, 2)}, batch_size=[rows])
    lrs = []
    for _ in range(3):
        stats = actor.fit(batch, lambda mb: (model.weight.sum() * 0, {}), 2, 2, prefix="actor")
        lrs.append(stats["actor/lr"])  # the lr its optimizer steps used
    assert lrs == [1 / 4, 2 / 4, 3 / 4], "warm-up counts RL steps, each of 2 x 2 updates"
