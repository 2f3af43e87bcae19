"""Online DPO and RSO train on π itself: their preference loss reads the policy's and the
reference's log-probs at temperature 1, whatever temperature sampled the pairs; BRAIn keeps
the sampling temperature (its weights compare the policy with the recorded proposal)."""

from __future__ import annotations

import copy

import pytest
import torch

from placerl.algos.brain import BRAInObjective
from placerl.algos.online import Roles
from placerl.algos.pair_training import PairObjective, label_pairs, pair_batch, train_on_pairs
from placerl.algos.preference import preference_loss, sequence_log_probs
from placerl.config.schema import OptimConfig
from placerl.data.collate import left_pad
from placerl.models.loading import load_policy, load_tokenizer
from placerl.roles.actor import ActorWorker
from placerl.roles.common import response_log_probs
from placerl.roles.reference import ReferenceWorker
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.timing import PhaseTimer
from placerl.types import Field

SAMPLING_T = 2.0


def sampled_pairs(model_dir):
    tok = load_tokenizer(model_dir)
    policy = load_policy(model_dir)
    prompts = ["rev 12345=", "rev 12345=", "rev 907=", "rev 907="]
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id)
    params = SamplingParams(max_new_tokens=5, temperature=SAMPLING_T)
    batch = RolloutWorker(policy, tok, params, seed=1).generate(ids, mask)
    batch[Field.SCORES] = torch.tensor([1.0, 0.0, 0.0, 2.0])
    return policy, batch, label_pairs([(0, 1), (2, 3)], batch[Field.SCORES])


@pytest.mark.parametrize("kind", ["sigmoid", "ipo", "hinge"])
def test_pair_loss_uses_log_probs_at_temperature_one(tiny_model_dir, kind):
    policy, batch, pairs = sampled_pairs(tiny_model_dir)
    reference_model = copy.deepcopy(policy)
    with torch.no_grad():  # the reference differs from the policy, so the loss is not log 2
        for p in reference_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    # the runtime builds both roles at the sampling temperature
    actor = ActorWorker(policy, OptimConfig(lr=1e-3), 10, temperature=SAMPLING_T)
    reference = ReferenceWorker(reference_model, temperature=SAMPLING_T)
    roles = Roles(rollout=None, actor=actor, reward=None, reference=reference)
    objective = PairObjective(kind=kind, beta=0.5, average=kind == "ipo")
    paired = pair_batch(batch, pairs)
    flat = paired.reshape(-1)
    with torch.no_grad():
        pol_1, _ = response_log_probs(policy, flat, 1.0)
        ref_1, _ = response_log_probs(reference_model, flat, 1.0)
        pol_t, _ = response_log_probs(policy, flat, SAMPLING_T)
    mask = paired[Field.RESPONSE_MASK]
    pol = sequence_log_probs(pol_1.view(2, 2, -1), mask, objective.average)
    ref = sequence_log_probs(ref_1.view(2, 2, -1), mask, objective.average)
    expected, _ = preference_loss(
        pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], kind=objective.kind, beta=0.5
    )
    assert not torch.allclose(pol_1, pol_t, atol=1e-3)  # the temperature matters here
    stats = train_on_pairs(roles, batch, pairs, objective, PhaseTimer())
    assert stats["loss/preference"] == pytest.approx(expected.item(), abs=1e-5)


def test_objectives_declare_their_temperature():
    assert PairObjective().temperature == 1.0  # online DPO, RSO: on π itself
    assert BRAInObjective().temperature is None  # BRAIn: the sampling temperature
