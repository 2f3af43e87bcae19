"""The GPU check's Flatten on Ray: NCCL between GPU workers (2 gloo workers with --cpu).

Skipped, with one line saying why, where it cannot run: Ray not installed (its ~70 MB wheel
does not travel to the GPU machine), or fewer than two GPUs (NCCL between workers needs two).
"""

from __future__ import annotations

import importlib.util
import time

import torch
from gpu_check_parts import config, run_steps

FIGURE = "Flatten on Ray"


def why_skipped(args) -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (its ~70 MB wheel does not travel to the GPU machine)"
    if not args.cpu and torch.cuda.device_count() < 2:
        return f"NCCL between workers needs 2 GPUs, {torch.cuda.device_count()} visible"
    return None


def flatten_on_ray(args, work, model_dir, results) -> None:
    """Flatten over every visible GPU (NCCL; 2 gloo workers with --cpu): the workers'
    weights must agree bitwise (replicas after all-reduced updates), the controller's mirror
    must equal them (the pull), and the weights must have moved. The local run on the same
    seed is the invariant, up to rounding: workers compute their rows as smaller batches."""
    skipped = why_skipped(args)
    if skipped:
        print(f"\n## {FIGURE}: skipped: {skipped}")
        results.add("ray", FIGURE, f"skipped: {skipped}")
        return
    import ray

    from placerl.models.loading import load_policy
    from placerl.runtime.sync.transport import checksum

    workers = 2 if args.cpu else torch.cuda.device_count()
    backend = "gloo" if args.cpu else "nccl"
    print(f"\n## {FIGURE}: {workers} workers, {backend}, 2 GRPO steps")
    extra = ("placement.strategy=flatten", f"placement.num_workers={workers}")
    cfg = config(args, work, model_dir, "grpo", "flatten", *extra)
    start = time.perf_counter()

    def weights(stage):
        refs = [actor.weights.remote("actor") for actor in stage.runtime.group.actors]
        ranks = [checksum(w)[:16] for w in ray.get(refs)]
        stage.runtime.pull_weights()
        return ranks, {k: v.detach().cpu().clone() for k, v in stage.policy.state_dict().items()}

    rows, (ranks, mirror) = run_steps(args, cfg, 2, weights)
    elapsed = time.perf_counter() - start
    print(
        f"startup + 2 steps {elapsed:.1f} s; step times {[round(r['time/step'], 3) for r in rows]}"
    )
    agree = len(set(ranks)) == 1
    print(f"worker checksums {ranks}: {'all equal' if agree else 'DIFFER'}")
    mirror_sum = checksum(mirror)[:16]
    mirrored = mirror_sum == ranks[0]
    print(f"controller mirror {mirror_sum}: {'equal' if mirrored else 'DIFFERS'}")
    initial = load_policy(model_dir).state_dict()
    moved = max(float((mirror[k] - v).abs().max()) for k, v in initial.items())
    print(f"largest weight change from the initial model: {moved:.2e}")
    local_cfg = config(args, work, model_dir, "grpo", "flatten_local")
    local_rows, local = run_steps(
        args,
        local_cfg,
        2,
        lambda stage: {k: v.detach().cpu().clone() for k, v in stage.policy.state_dict().items()},
    )
    gap = max(float((mirror[k] - v).abs().max()) for k, v in local.items())
    loss_gap = max(
        abs(a["loss/policy"] - b["loss/policy"]) for a, b in zip(rows, local_rows, strict=True)
    )
    print(f"local runtime, same seed: max |weight gap| {gap:.2e}, max |loss gap| {loss_gap:.2e}")
    value = "ok" if agree and mirrored and moved > 0 else "MISMATCH"
    note = (
        f"{workers} workers, {backend}: checksums {'equal' if agree else 'differ'}, mirror "
        f"{'equal' if mirrored else 'differs'}, moved {moved:.1e}, vs local: loss gap "
        f"{loss_gap:.1e}; startup + 2 steps {elapsed:.1f} s"
    )
    results.add("ray", FIGURE, value, note)
