"""Separate on Ray: the rollout on a worker of its own, synced from the trainer's worker.

With ``max_staleness: 0`` it trains like one process (the invariant of placement); after
every sync the rollout copy holds the trainer's weights bit for bit; with ``max_staleness: 1``
the rollout worker samples the next batch while the trainer's worker updates on this one.
"""

from __future__ import annotations

import pytest

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.runtime.sync.transport import checksum
from placerl.stages.online import OnlineStage
from placerl.timing import PhaseTimer
from placerl.trainer import seed_everything
from tests.conftest import fast_overrides
from tests.runtime.test_invariants_on_cpu import COMMON, GRPO, TWO_WORKERS

ray = pytest.importorskip("ray")

STEPS = 3
SEPARATE = ["placement.strategy=separate", *TWO_WORKERS]  # gen/w0: rollout, train/w1: actor
LOSSES = ["loss/policy", "loss/kl", "actor/grad_norm", "actor/ratio_mean", "kl/mean"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def _stage(model_dir, run_dir, extra=()) -> OnlineStage:
    overrides = [*fast_overrides(model_dir, run_dir, "grpo", STEPS), *COMMON, *GRPO, *extra]
    cfg = load_config(None, overrides, RunConfig)
    seed_everything(cfg.seed)
    return OnlineStage(cfg)


def _run(stage: OnlineStage, steps: int = STEPS):
    """Per-step metrics and every span of the timeline (controller's and workers')."""
    timer, metrics, spans = PhaseTimer(), [], []
    try:
        for step in range(steps):
            metrics.append(stage.step(step, timer))
            timer.pop()
            spans += timer.pop_spans()
    finally:
        stage.close()
    return metrics, spans


def _check_every_sync(stage: OnlineStage) -> list[tuple[str, list[str]]]:
    """After each sync: checksums of the trainer's weights and of every rollout copy."""
    runtime, syncer = stage.runtime, stage.pipeline.syncer
    seen, sync = [], syncer.sync

    def checked():
        stats = sync()
        trainer = runtime.roles.actor.client.on_hosts("weights").result()
        copies = runtime.call_hosts(syncer.ranks.receivers, "weights", "rollout")
        seen.append((checksum(trainer), [checksum(w) for w in copies]))
        return stats

    syncer.sync = checked
    return seen


@pytest.mark.slow
def test_separate_at_staleness_zero_follows_the_local_trajectory_and_syncs_exactly(
    tiny_model_dir, tmp_path
):
    local, _ = _run(_stage(tiny_model_dir, tmp_path / "local"))
    stage = _stage(tiny_model_dir, tmp_path / "separate", SEPARATE)
    assert stage.runtime.plan.strategy == "separate"
    syncs = _check_every_sync(stage)
    placed, spans = _run(stage)

    for step, (a, b) in enumerate(zip(local, placed, strict=True)):
        assert b["pipeline/staleness"] == 0.0
        assert a["response/length"] == b["response/length"], f"step {step}: other samples"
        for key in LOSSES:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), f"step {step} {key}"
    assert len(syncs) == STEPS - 1, "one sync before each sample but the first"
    for trainer, copies in syncs:
        assert copies == [trainer], "the rollout copy holds the trainer's weights"
    assert syncs[0][0] != syncs[1][0], "scenario: the trainer moved between syncs"
    workers = {(s.worker, s.phase) for s in spans}
    assert {("gen/w0", "rollout.generate"), ("gen/w0", "rollout.sync")} <= workers
    assert {("train/w1", "actor.update"), ("train/w1", "rollout.sync")} <= workers
    assert ("gen/w0", "actor.update") not in workers, "the rollout worker trains nothing"


def _overlap(a, b) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


@pytest.mark.slow
def test_separate_at_staleness_one_samples_while_the_trainer_updates(tiny_model_dir, tmp_path):
    longer = ["rollout.max_new_tokens=32", "rollout.stop_strings=[]"]  # sampling outlasts the
    extra = [*SEPARATE, "placement.max_staleness=1", *longer]  # trainer's work before update
    metrics, spans = _run(_stage(tiny_model_dir, tmp_path / "separate", extra))

    assert [m["pipeline/staleness"] for m in metrics] == [0.0, 1.0, 1.0]
    assert all(m["actor/is_weight_mean"] > 0 for m in metrics[1:]), "stale: IS-corrected"
    generate = [s for s in spans if (s.worker, s.phase) == ("gen/w0", "rollout.generate")]
    update = [s for s in spans if (s.worker, s.phase) == ("train/w1", "actor.update")]
    assert len(generate) == len(update) == STEPS  # the sample after the last is not awaited
    for k in range(STEPS - 1):
        assert _overlap(generate[k + 1], update[k]) > 0, f"sample {k + 1} while update {k}"
