"""An actor update reports the loss whose gradient it follows: the same loss when zero-advantage
samples are skipped (algos/skipping.py), and the same loss and gradient summed over
data-parallel shares (runtime/ray/data_parallel.py ``ShardedUpdate``) as in one process.

The shares are run in this process, one rank after the other: no Ray, no process group.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from placerl.algos.objectives import PolicyObjective
from placerl.config.schema import OptimConfig
from placerl.data.collate import left_pad
from placerl.models.loading import load_policy, load_tokenizer
from placerl.roles.actor import ActorWorker
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.runtime.ray.data_parallel import DataParallel, ShardedUpdate, combine_update_stats
from placerl.types import Field

WORKERS = 2


def _experience(model_dir, advantages: list[float]):
    tok = load_tokenizer(model_dir)
    policy = load_policy(model_dir)
    prompts = ["rev 12345=", "rev 9=", "rev 123=", "rev 4471="]
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id)
    batch = RolloutWorker(policy, tok, SamplingParams(max_new_tokens=6), seed=5).generate(ids, mask)
    assert bool(batch[Field.RESPONSE_MASK].any(dim=1).all()), "scenario: no empty response"
    batch[Field.ADVANTAGES] = torch.tensor(advantages)[:, None] * batch[Field.RESPONSE_MASK]
    return policy, batch


def _loss_function(actor: ActorWorker, batch, objective: PolicyObjective):
    """The per-minibatch loss function ``update`` hands to ``fit`` (fit itself is not run)."""
    captured = {}
    actor.fit = lambda _batch, loss_of, *args, **kwargs: captured.setdefault("loss_of", loss_of)
    actor.update(batch, objective)
    return captured["loss_of"]


def _gradient(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    if not loss.requires_grad:  # a constant loss (a share with nothing to learn from)
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
def test_skipping_reports_the_loss_of_the_full_minibatch(tiny_model_dir, loss_agg):
    # advantages that do not cancel: the kept rows' own mean is not the full minibatch's
    policy, batch = _experience(tiny_model_dir, [1.0, 0.0, 0.5, 0.0])
    losses = {}
    for skip in (False, True):
        actor = ActorWorker(copy.deepcopy(policy), OptimConfig(lr=1e-3), 10)
        objective = PolicyObjective(loss_agg=loss_agg, skip_uninformative=skip)
        stats = actor.update(batch, objective, epochs=1, minibatches=1)
        assert ("actor/skipped_share" in stats) == skip
        losses[skip] = stats["loss/policy"]
    assert losses[False] != 0.0
    assert losses[True] == pytest.approx(losses[False], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
def test_data_parallel_shares_add_up_to_the_local_loss_and_gradient(tiny_model_dir, loss_agg, skip):
    # rank 0's rows [0, 1] carry no advantage (with skipping: no forward at all), rank 1 keeps
    # one of its two rows
    policy, batch = _experience(tiny_model_dir, [0.0, 0.0, 1.0, 0.0])
    actor = ActorWorker(policy, OptimConfig(lr=1e-3), 10)
    objective = PolicyObjective(loss_agg=loss_agg, skip_uninformative=skip)
    loss_of = _loss_function(actor, batch, objective)
    params = [p for p in policy.parameters() if p.requires_grad]

    loss, stats = loss_of(batch)
    expected = _gradient(loss, params)
    shares, summed = [], [torch.zeros_like(p) for p in params]
    for rank in range(WORKERS):
        worker = SimpleNamespace(dp=DataParallel(rank, WORKERS), _loss_agg=loss_agg)
        share_loss, share_stats = ShardedUpdate._share_of(worker, loss_of)(batch)
        # what the gradient all-reduce does: the mean of the ranks' gradients
        for total, grad in zip(summed, _gradient(share_loss, params), strict=True):
            total += grad / WORKERS
        shares.append({k: float(v) for k, v in share_stats.items()})

    combined = combine_update_stats(shares)
    assert float(stats["loss/policy"]) != 0.0
    assert combined["loss/policy"] == pytest.approx(float(stats["loss/policy"]), rel=1e-5)
    names = [name for name, p in policy.named_parameters() if p.requires_grad]
    for name, got, want in zip(names, summed, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8, msg=name)
