"""Weight sync: trainer → rollout copies end bitwise equal, over gloo between real processes
and in one process, whatever the bucket size; a mismatched model is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from placerl.placement.plan.plan import Cluster, DeviceSlot
from placerl.placement.plan.strategies import flatten, separate
from placerl.runtime.pipeline import SyncSchedule
from placerl.runtime.sync.transport import (
    broadcast_weights,
    checksum,
    copy_weights,
    iter_mismatches,
    make_sync_group,
    named_tensors,
    plan_buckets,
)
from placerl.runtime.sync.workers import sync_on_host, sync_ranks
from placerl.types import Role

ROLES = (Role.ACTOR, Role.ROLLOUT, Role.REWARD)


class Mixed(nn.Module):
    """Mixed dtypes, a tied weight, a buffer: what a real model brings to a sync."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(11, 6)
        self.body = nn.Linear(6, 6)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.embed.weight  # tied: synced once
        self.low = nn.Parameter(torch.randn(5, 3).to(torch.bfloat16))
        self.register_buffer("steps", torch.tensor([seed, 7], dtype=torch.int64))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.body(self.embed(ids)) + self.low.float().sum()
        return self.head(hidden)


def _train_a_little(model: Mixed) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        model(torch.arange(11)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.steps += 1


BUCKETS_MB = (16 / 2**20, 64.0)  # 16 bytes: smaller than one tensor; 64 MB: the whole model


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = Mixed(seed=100 + rank)  # every rank starts different
        # the sync group leaves rank 1 out: its weights must never move
        group = make_sync_group([0, 2], backend="gloo")
        rounds = []
        for round_, bucket_mb in enumerate(BUCKETS_MB):
            if rank == 0:
                _train_a_little(model)
            else:  # receivers drift too, so every round starts from different weights
                with torch.no_grad():
                    model.body.weight.add_(rank + round_)
            before = checksum(model)
            stats = None
            if rank in (0, 2):
                stats = broadcast_weights(model, src=0, group=group, bucket_mb=bucket_mb)
            rounds.append(
                {
                    "before": before,
                    "after": checksum(model),
                    "buckets": stats.buckets if stats else 0,
                    "tensors": {n: t.float().tolist() for n, t in named_tensors(model)},
                    "tied": model.head.weight.data_ptr() == model.embed.weight.data_ptr(),
                }
            )
        Path(out_dir, f"{rank}.json").write_text(json.dumps(rounds))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_broadcast_makes_sync_group_bitwise_equal_and_spares_others(tmp_path):
    mp.spawn(_worker, args=(3, str(tmp_path / "store"), str(tmp_path)), nprocs=3, join=True)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(3)]
    for round_, bucket_mb in enumerate(BUCKETS_MB):
        r0, r1, r2 = (rounds[round_] for rounds in ranks)
        assert r2["before"] != r0["before"], "receivers must start different, or the test is empty"
        assert r2["after"] == r0["after"] == r0["before"]
        assert r2["tensors"] == r0["tensors"]  # every tensor, element by element
        assert r1["after"] == r1["before"], "rank 1 is outside the sync group"
        assert r2["tied"], "the sync must write through tied weights, not untie them"
        if bucket_mb < 1:
            assert r0["buckets"] > len(r0["tensors"]), "tiny buckets must split tensors"
        else:
            assert r0["buckets"] == 3  # one bucket per dtype: float32, bfloat16, int64


def test_plan_buckets_covers_every_element_once_within_the_cap():
    specs = [(torch.float32, 10), (torch.int64, 3), (torch.float32, 7), (torch.float32, 0)]
    for cap_bytes in (4, 12, 40, 4096):
        buckets = plan_buckets(specs, cap_bytes)
        seen = {i: [] for i in range(len(specs))}
        for bucket in buckets:
            size = torch.empty((), dtype=bucket.dtype).element_size()
            assert bucket.numel * size <= max(cap_bytes, size)
            assert sum(p.stop - p.start for p in bucket.pieces) == bucket.numel
            for p in bucket.pieces:
                assert specs[p.index][0] == bucket.dtype
                seen[p.index].extend(range(p.start, p.stop))
        for i, (_, numel) in enumerate(specs):
            assert sorted(seen[i]) == list(range(numel)), (cap_bytes, i)


def test_copy_weights_in_process_is_exact_and_checks_layout():
    source, shadow = Mixed(seed=1), Mixed(seed=2)
    _train_a_little(source)
    assert checksum(source) != checksum(shadow)
    stats = copy_weights(source, shadow)
    assert checksum(source) == checksum(shadow)
    assert list(iter_mismatches(source, shadow)) == []
    assert stats.tensors == len(named_tensors(source))

    wrong = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="source sends"):
        copy_weights(source, wrong)


def test_copy_weights_casts_into_a_lower_precision_copy():
    source = Mixed(seed=1)
    shadow = Mixed(seed=2).to(torch.bfloat16)
    copy_weights(source, shadow)
    assert torch.equal(shadow.body.weight, source.body.weight.to(torch.bfloat16))


def test_sync_schedule_is_due_every_n_updates():
    schedule = SyncSchedule(every=2)
    assert not schedule.due(trainer_version=1, rollout_version=0)
    assert schedule.due(trainer_version=2, rollout_version=0)
    with pytest.raises(ValueError, match="sync_every"):
        SyncSchedule(every=0)


def _cluster(n: int) -> Cluster:
    return Cluster(tuple(DeviceSlot("cpu", i) for i in range(n)))


def test_sync_ranks_follow_the_plan():
    assert sync_ranks(flatten(ROLES, _cluster(2))) is None, "rollout shares the actor"
    ranks = sync_ranks(separate(ROLES, _cluster(3), generation_slots=2))
    assert (ranks.source, ranks.receivers, ranks.gatherers) == (2, (0, 1), (2,))
    assert ranks.group_ranks == (2, 0, 1)


def _separate_worker(rank: int, store: str, out_dir: str, model_dir: str) -> None:
    """Ranks 0-1 hold rollout copies ('gen'), rank 2 the actor ('train'), as Separate places."""
    from placerl.models.loading import load_policy

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=3)
    try:
        ranks = sync_ranks(separate(ROLES, _cluster(3), generation_slots=2))
        group = make_sync_group(ranks.group_ranks)  # every process calls new_group
        policy = load_policy(model_dir)
        source = rollout = None
        if rank == ranks.source:
            with torch.no_grad():  # the trainer has moved on from the initial weights
                for param in policy.parameters():
                    param.add_(0.01 * torch.randn_like(param))
            source = policy
        else:
            rollout = policy
        before = checksum(policy)
        sync_on_host(rank, ranks, group, source=source, rollout_model=rollout, bucket_mb=0.01)
        Path(out_dir, f"{rank}.json").write_text(json.dumps([before, checksum(policy)]))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # three processes importing transformers: ~30 s on 2 shared cores
def test_separate_trainer_weights_reach_every_rollout_copy(tmp_path, tiny_model_dir):
    mp.spawn(
        _separate_worker,
        args=(str(tmp_path / "store"), str(tmp_path), str(tiny_model_dir)),
        nprocs=3,
        join=True,
    )
    (before0, after0), (_, after1), (trainer, trainer_after) = (
        json.loads((tmp_path / f"{r}.json").read_text()) for r in range(3)
    )
    assert before0 != trainer, "the copies start behind the trainer"
    assert after0 == after1 == trainer == trainer_after
