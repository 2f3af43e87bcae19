"""Micro-batches with gradient accumulation give the gradient of one big forward (fp32, 1e-6):
PPO actor (with KL and entropy terms), critic, GRPO (shared prompts, skipping), grouped
objectives (preference pairs, BRAIn), SFT, reward model, DPO. And the cutting rules: whole
prompt groups, both limits, a group larger than a micro-batch cut, grouped rows never cut."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaForTokenClassification

import placerl.algos.dpo as dpo_module
import placerl.algos.reward_model as rm_module
import placerl.algos.sft as sft_module
import placerl.roles.common as common
from placerl.algos.brain import BRAInObjective
from placerl.algos.objectives import PolicyObjective, ValueObjective
from placerl.algos.pair_training import PairObjective
from placerl.config.preference import PreferenceConfig
from placerl.config.schema import OptimConfig
from placerl.models.loading import disable_dropout
from placerl.models.micro_batches import MicroBatching, micro_batches, pack_units, trim_padding
from placerl.roles.actor import ActorWorker
from placerl.roles.critic import CriticWorker
from placerl.runtime.ray.data_parallel import DataParallel, ShardedUpdate, combine_update_stats
from placerl.types import Field
from tests.synthetic import rollout_batch, tiny_lm

# the recorder replaces the optimizer step, so torch warns about the schedule's step
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
SETTINGS = [MicroBatching(rows=2), MicroBatching(tokens=14), MicroBatching(rows=4, tokens=20)]


def _capture(monkeypatch, module):
    """Replace ``module.clip_and_step`` by a recorder of the accumulated gradients."""
    grads: list[list[torch.Tensor]] = []

    def record(model, optimizer, grad_clip, loss=None):
        grads.append(
            [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
        )
        optimizer.zero_grad(set_to_none=True)
        return 0.0

    monkeypatch.setattr(module, "clip_and_step", record)
    return grads


def _assert_same(full, micro):
    assert len(full) == len(micro)
    for step_full, step_micro in zip(full, micro, strict=True):
        a = torch.cat([g.flatten() for g in step_full])
        b = torch.cat([g.flatten() for g in step_micro])
        assert a.norm() > 0, "scenario: a gradient to compare"
        scale = max(1.0, float(a.abs().max()))  # 1e-6 of the largest entry (IPO's reach ~1)
        assert float((a - b).abs().max()) <= 1e-6 * scale  # fp32 summation order, no more
        assert float((a - b).norm() / a.norm()) <= 1e-5


def _run_actor(monkeypatch, spec, run):
    grads = _capture(monkeypatch, common)
    actor = ActorWorker(tiny_lm(seed=1), OptimConfig(), 1, micro_batching=spec, temperature=0.9)
    stats = run(actor)
    return grads, stats


@pytest.mark.parametrize("spec", SETTINGS)
@pytest.mark.parametrize(
    "agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
)
def test_ppo_actor_gradient_equals_one_big_forward(monkeypatch, spec, agg):
    batch = rollout_batch(groups=4, group_size=2, seed=3)
    objective = PolicyObjective(loss_agg=agg, kl_coef=0.1, entropy_coef=0.05, loss_norm=8.0)
    full, full_stats = _run_actor(monkeypatch, None, lambda a: a.update(batch, objective, 1, 2))
    micro, micro_stats = _run_actor(monkeypatch, spec, lambda a: a.update(batch, objective, 1, 2))
    _assert_same(full, micro)
    for key in ("loss/policy", "loss/kl", "actor/entropy"):
        assert micro_stats[key] == pytest.approx(full_stats[key], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("spec", SETTINGS)
def test_grpo_with_shared_prompts_and_skipping_equals_one_big_forward(monkeypatch, spec):
    batch = rollout_batch(groups=4, group_size=3, seed=5, zero_groups=(1, 2))
    objective = PolicyObjective(loss_agg="token-mean", skip_uninformative=True)
    full, full_stats = _run_actor(monkeypatch, None, lambda a: a.update(batch, objective))
    micro, micro_stats = _run_actor(monkeypatch, spec, lambda a: a.update(batch, objective))
    _assert_same(full, micro)
    assert micro_stats["loss/policy"] == pytest.approx(full_stats["loss/policy"], rel=1e-5)


@pytest.mark.parametrize("spec", [MicroBatching(rows=2), MicroBatching(rows=5, tokens=30)])
@pytest.mark.parametrize("kind", ["pairs", "brain"])
def test_grouped_objectives_equal_one_big_forward(monkeypatch, spec, kind):
    flat = rollout_batch(groups=3, group_size=2, seed=7)
    if kind == "pairs":
        groups, objective = flat.reshape(-1, 2), PairObjective(beta=0.5, sft_coef=0.3)
    else:
        flat = rollout_batch(groups=2, group_size=3, seed=7)
        groups, objective = flat.reshape(-1, 3), BRAInObjective(beta=0.5)
    full, _ = _run_actor(monkeypatch, None, lambda a: a.fit_grouped(groups, objective))
    micro, _ = _run_actor(monkeypatch, spec, lambda a: a.fit_grouped(groups, objective))
    _assert_same(full, micro)


@pytest.mark.parametrize("spec", SETTINGS)
def test_critic_gradient_equals_one_big_forward(monkeypatch, spec):
    batch = rollout_batch(groups=3, group_size=2, seed=9)
    base = tiny_lm(seed=2)
    torch.manual_seed(0)
    config = copy.deepcopy(base.config)
    config.num_labels = 1
    value_model = disable_dropout(LlamaForTokenClassification(config))
    runs = []
    for setting in (None, spec):
        grads = _capture(monkeypatch, common)
        critic = CriticWorker(copy.deepcopy(value_model), OptimConfig(), 1, micro_batching=setting)
        critic.update(batch, ValueObjective(loss_agg="seq-mean-token-mean"))
        runs.append(grads)
    _assert_same(*runs)


def test_cutting_keeps_prompt_groups_and_both_limits():
    batch = rollout_batch(groups=4, group_size=3, seed=11)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    shuffled = batch[order]
    parts = micro_batches(shuffled, MicroBatching(rows=6))
    assert sorted(torch.cat(parts).tolist()) == list(range(12))
    prompts = shuffled[Field.PROMPT_IDS]
    for part in parts:
        assert len(part) <= 6
        groups = {tuple(prompts[i].tolist()) for i in part}
        assert len(part) == 3 * len(groups), "whole groups of 3"
    # a group of 3 over a 2-row limit is cut; a token budget is honoured
    assert all(len(p) <= 2 for p in micro_batches(shuffled, MicroBatching(rows=2)))
    tokens = shuffled[Field.ATTENTION_MASK].sum(-1)
    for part in micro_batches(shuffled, MicroBatching(tokens=25)):
        assert len(part) == 1 or int(tokens[part].sum()) <= 25
    # grouped rows (pairs) are never cut, and count as two sequences
    assert pack_units([[0], [1], [2]], [5, 5, 5], 2, MicroBatching(rows=3)) == [[0], [1], [2]]


def test_trim_padding_drops_only_unused_columns():
    batch = rollout_batch(groups=3, group_size=2, seed=13)
    part = trim_padding(batch[[0, 1]])
    width = int(batch[Field.PROMPT_MASK][[0, 1]].sum(-1).max())
    assert part[Field.PROMPT_IDS].shape[1] == width
    assert part[Field.RESPONSE_MASK].shape[1] == int(
        batch[Field.RESPONSE_MASK][[0, 1]].sum(-1).max()
    )
    assert (
        part[Field.INPUT_IDS].shape[1]
        == part[Field.PROMPT_IDS].shape[1] + part[Field.RESPONSE_IDS].shape[1]
    )
    assert int(part[Field.ATTENTION_MASK].sum()) == int(batch[Field.ATTENTION_MASK][[0, 1]].sum())


# ------------------------------------------------------------------ SFT, reward model, DPO


def _optimizer(model):
    return common.make_optimizer(model.parameters(), OptimConfig(), 1)


@pytest.mark.parametrize("spec", [MicroBatching(rows=1), MicroBatching(rows=3, tokens=40)])
def test_sft_gradient_equals_one_big_forward(tiny_model_dir, monkeypatch, spec):
    from placerl.models.loading import load_policy, load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    pairs = [("rev 12=", "21"), ("rev 98765=", "56789"), ("rev 3=", "3"), ("rev 4410=", "0144")]
    runs, losses = [], []
    for setting in (None, spec):
        grads = _capture(monkeypatch, sft_module)
        model = load_policy(tiny_model_dir)
        algo = sft_module.SFT(
            model,
            tok,
            *_optimizer(model),
            max_len=32,
            grad_clip=1.0,
            precision="fp32",
            micro_batching=setting,
        )
        losses.append(algo.step(pairs)["loss/sft"])
        runs.append(grads)
    _assert_same(*runs)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_sft_loss_is_hugging_faces_label_loss(tiny_model_dir):
    from placerl.data.collate import sft_batch
    from placerl.models.loading import load_policy, load_tokenizer

    tok, model = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    pairs = [("rev 12=", "21"), ("rev 98765=", "56789")]
    batch = sft_batch(tok, pairs, 32)
    hf = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=common.position_ids(batch["attention_mask"]),
        labels=batch["labels"],
    ).loss
    algo = sft_module.SFT(
        model, tok, *_optimizer(model), max_len=32, grad_clip=1.0, precision="fp32"
    )
    assert algo.eval_loss(pairs) == pytest.approx(float(hf.detach()), rel=1e-5)


@pytest.mark.parametrize("spec", [MicroBatching(rows=2), MicroBatching(tokens=30)])
def test_reward_model_gradient_equals_one_big_forward(tiny_model_dir, monkeypatch, spec):
    from placerl.models.loading import load_reward_model, load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    triples = [("rev 12=", "21", "12"), ("rev 987=", "789", "7"), ("rev 3=", "3", "33")]
    runs = []
    for setting in (None, spec):
        grads = _capture(monkeypatch, rm_module)
        model = load_reward_model(tiny_model_dir, tok.pad_token_id)
        torch.manual_seed(0)
        torch.nn.init.normal_(model.score.weight, std=0.1)  # a head with a gradient path
        algo = rm_module.RewardModelTraining(
            model,
            tok,
            *_optimizer(model),
            max_len=32,
            grad_clip=1.0,
            precision="fp32",
            micro_batching=setting,
        )
        algo.step(triples)
        runs.append(grads)
    _assert_same(*runs)


@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_dpo_gradient_equals_one_big_forward(tiny_model_dir, monkeypatch, loss):
    from placerl.algos.dpo import EncodedPair, OfflinePreference
    from placerl.models.loading import load_policy

    pairs = [
        EncodedPair([1, 5, 6], [7, 8, 2], [9, 2]),
        EncodedPair([1, 10], [11, 2], [12, 13, 14, 2]),
        EncodedPair([1, 15, 16, 17], [18, 2], [19, 20, 2]),
    ]
    runs, metrics = [], []
    for setting in (None, MicroBatching(rows=2)):
        grads = _capture(monkeypatch, dpo_module)
        model = load_policy(tiny_model_dir)
        algo = OfflinePreference(
            model,
            *_optimizer(model),
            PreferenceConfig(loss=loss, sft_coef=0.2),
            grad_clip=1.0,
            precision="fp32",
            pad_id=0,
            micro_batching=setting,
        )
        reference = algo.reference_log_probs(model, pairs) - 0.3 * torch.arange(6.0).view(3, 2)
        metrics.append(algo.step(pairs, reference))
        runs.append(grads)
    _assert_same(*runs)
    assert metrics[1][f"loss/{loss}"] == pytest.approx(metrics[0][f"loss/{loss}"], rel=1e-5)
    assert metrics[1]["rewards/margin"] == pytest.approx(metrics[0]["rewards/margin"], rel=1e-5)


class _Rank(ActorWorker):
    """An actor as runtime/ray/data_parallel.py's ``ShardedUpdate`` runs it on one rank of
    ``WORKERS`` replicas, without a process group: each micro-batch cut into rank shares."""

    micro_batch_workers = 2

    def __init__(self, model, rank: int, spec):
        super().__init__(model, OptimConfig(), 1, micro_batching=spec, temperature=0.9)
        self.dp = DataParallel(rank, self.micro_batch_workers)

    def update(self, batch, objective, epochs=1, minibatches=1):
        self._loss_agg = objective.loss_agg
        return super().update(batch, objective, epochs, minibatches)

    def fit(self, batch, loss_of, *args, **kwargs):
        return super().fit(batch, ShardedUpdate._share_of(self, loss_of), *args, **kwargs)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_compose_with_data_parallel_shares(monkeypatch, agg):
    batch = rollout_batch(groups=4, group_size=3, seed=15, zero_groups=(2,))
    objective = PolicyObjective(loss_agg=agg, kl_coef=0.1, skip_uninformative=True)
    full, full_stats = _run_actor(monkeypatch, None, lambda a: a.update(batch, objective, 1, 2))
    ranks, rank_stats = [], []
    for rank in range(_Rank.micro_batch_workers):
        grads = _capture(monkeypatch, common)
        rank_stats.append(
            _Rank(tiny_lm(seed=1), rank, MicroBatching(rows=2)).update(batch, objective, 1, 2)
        )
        ranks.append(grads)
    # what the gradient all-reduce does: the mean over the ranks
    averaged = [
        [sum(grads) / len(ranks) for grads in zip(*steps, strict=True)]
        for steps in zip(*ranks, strict=True)
    ]
    _assert_same(full, averaged)
    combined = combine_update_stats(rank_stats)
    assert combined["loss/policy"] == pytest.approx(full_stats["loss/policy"], rel=1e-5)
