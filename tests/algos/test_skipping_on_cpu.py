"""Skipping zero-advantage samples changes the work of an update, never its result."""

from __future__ import annotations

import copy

import pytest
import torch

from placerl.algos.objectives import PolicyObjective
from placerl.algos.skipping import informative_rows, kept_share
from placerl.config.schema import OptimConfig
from placerl.data.collate import left_pad
from placerl.models.loading import load_policy, load_tokenizer
from placerl.roles.actor import ActorWorker
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.types import Field


def test_kept_share_is_the_ratio_of_normalizers():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    keep = torch.tensor([True, False, True, False])
    assert kept_share(mask, keep, "token-mean") == pytest.approx(5 / 6)
    assert kept_share(mask, keep, "seq-mean-token-mean") == pytest.approx(2 / 3)  # 3 non-empty
    assert kept_share(mask, torch.zeros(4, dtype=torch.bool), "token-mean") == 0.0


def test_only_nonzero_advantages_are_informative_unless_a_kl_term_needs_every_sample():
    from tensordict import TensorDict

    adv = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 1], [0, 0]])
    batch = TensorDict({Field.ADVANTAGES: adv, Field.RESPONSE_MASK: mask}, batch_size=[3])
    assert informative_rows(batch, PolicyObjective()).tolist() == [True, False, False]
    assert informative_rows(batch, PolicyObjective(kl_coef=0.1)).all()


def _experience(model_dir, advantages):
    tok = load_tokenizer(model_dir)
    policy = load_policy(model_dir)
    prompts = ["rev 12345=", "rev 9=", "rev 123=", "rev 4471="]
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id)
    rollout = RolloutWorker(policy, tok, SamplingParams(max_new_tokens=6), seed=5)
    batch = rollout.generate(ids, mask)
    seq_adv = torch.tensor(advantages)
    batch[Field.ADVANTAGES] = seq_adv[:, None] * batch[Field.RESPONSE_MASK]
    return policy, batch


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("advantages", [[1.0, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
def test_skipping_gives_the_weights_of_the_full_update(tiny_model_dir, advantages, loss_agg):
    policy, batch = _experience(tiny_model_dir, advantages)
    weights, grad_norms = {}, {}
    for skip in (False, True):
        model = copy.deepcopy(policy)
        actor = ActorWorker(model, OptimConfig(lr=1e-3), 10)
        objective = PolicyObjective(loss_agg=loss_agg, skip_uninformative=skip)
        grad_norms[skip] = []
        for _ in range(3):  # Adam's moments carry earlier steps into all-zero ones
            stats = actor.update(batch, objective, epochs=1, minibatches=2)
            grad_norms[skip].append(stats["actor/grad_norm"])
        assert ("actor/skipped_share" in stats) == skip
        weights[skip] = model.state_dict()
    # Adam hides a constant gradient scale, so the (pre-clip) gradient norm is checked too
    assert grad_norms[True] == pytest.approx(grad_norms[False], rel=1e-5, abs=1e-9)
    changed = any(not torch.equal(weights[True][k], v) for k, v in policy.state_dict().items())
    assert changed == any(advantages)
    for name, full in weights[False].items():
        torch.testing.assert_close(weights[True][name], full, atol=1e-6, rtol=1e-5, msg=name)
