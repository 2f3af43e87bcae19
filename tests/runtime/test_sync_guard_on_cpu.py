"""The sync guard stops a run whose rollout does not hold the trainer's weights after a sync.

Corrupted on purpose: one bucket garbled in transit between two gloo processes (the receivers'
fingerprints of what arrived differ from the sender's), a tensor garbled while the local shadow
copy is written, and a copy that arrived intact but then samples with other weights (the next
batch's |log π_old − log μ| is far over the documented bound). A healthy run logs that gap
well under the bound.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.runtime.sync import transport
from placerl.runtime.sync.consumers import LocalShadow
from placerl.runtime.sync.guard import MAX_LOG_PROB_GAP, SyncError, check_arrival
from placerl.trainer import train
from tests.conftest import fast_overrides
from tests.runtime.test_weight_sync_on_cpu import Mixed, _train_a_little

STALE_GRPO = [
    "reward.function=tests.conftest:length_reward",
    "placement.max_staleness=1",  # a shadow copy, synced before every sample but the first
    "data.num_eval=0",
]


def _garble_second(buffer: torch.Tensor, calls=[0]) -> torch.Tensor:  # noqa: B006 (a counter)
    """The second bucket that arrives comes with one element changed."""
    calls[0] += 1
    if calls[0] == 2:
        buffer = buffer.clone()
        buffer.view(-1)[0] += 1
    return buffer


def _broadcast(rank: int, store: str, out_dir: str, garble: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        if rank == 1 and garble:
            transport.received = _garble_second  # this process only
        model = Mixed(seed=10 + rank)
        if rank == 0:
            _train_a_little(model)
        stats = transport.broadcast_weights(model, src=0, bucket_mb=64 / 2**20)
        Path(out_dir, f"{rank}.json").write_text(json.dumps(stats.fingerprint))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("garble", [False, True], ids=["intact", "garbled"])
def test_a_bucket_garbled_in_transit_is_caught_by_its_fingerprint(tmp_path, garble):
    mp.spawn(_broadcast, args=(str(tmp_path / "store"), str(tmp_path), garble), nprocs=2)
    sent, arrived = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    if not garble:
        check_arrival(sent, {"rank 1": arrived})
        return
    with pytest.raises(SyncError, match="rank 1 received weights whose fingerprint differs"):
        check_arrival(sent, {"rank 1": arrived})


def _cfg(model_dir, run_dir, steps=3):
    overrides = [*fast_overrides(model_dir, run_dir, "grpo", steps), *STALE_GRPO]
    return load_config(None, overrides, RunConfig)


def test_a_garbled_local_copy_stops_the_run(tiny_model_dir, tmp_path, monkeypatch):
    seen = []

    def garble(tensor):
        seen.append(tensor.numel())
        return tensor * 2 if len(seen) == 3 else tensor  # the third tensor of the first sync

    monkeypatch.setattr(transport, "received", garble)
    with pytest.raises(SyncError, match="the rollout copy received weights whose fingerprint"):
        train(_cfg(tiny_model_dir, tmp_path))
    assert seen, "the sync went through the seam"


def test_a_copy_that_samples_other_weights_fails_the_next_batch(
    tiny_model_dir, tmp_path, monkeypatch
):
    """The fingerprints agree, but the rollout then samples with other weights (an engine that
    kept its old ones): the first batch after the sync is far from the trainer's log-probs."""
    sync = LocalShadow.sync

    def sync_then_drift(self):
        stats = sync(self)
        with torch.no_grad():
            for param in self.shadow_model.parameters():
                param.add_(torch.randn_like(param))
        return stats

    monkeypatch.setattr(LocalShadow, "sync", sync_then_drift)
    with pytest.raises(SyncError, match=r"mean \|log π_old − log μ\| = .* over the bound") as err:
        train(_cfg(tiny_model_dir, tmp_path))
    # sample 2 is the first launched after a sync (sample 1 was launched at version 0)
    assert "(step 3)" in err.value.message


def test_a_healthy_run_logs_the_gap_under_the_bound(tiny_model_dir, tmp_path):
    train(_cfg(tiny_model_dir, tmp_path, steps=4))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    gaps = [row["sync/log_prob_gap"] for row in rows if "sync/log_prob_gap" in row]
    assert len(gaps) == 2, "checked on the batches of steps 3 and 4, each sampled after a sync"
    assert all(0 < gap < MAX_LOG_PROB_GAP / 10 for gap in gaps), gaps
