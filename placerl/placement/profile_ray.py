"""The profile's measurement of a controller → workers phase call over Ray.

Every phase of a worker plan is one call per worker: the controller splits the batch, puts
it in the object store, each worker deserializes its share, runs, and returns its result and
spans, which the controller gathers and concatenates. ``rpc_latency`` is that round trip with
no work in it: the median of 20 calls of an echo method on two actors (1 CPU each), sending
each half of a 32-row batch and getting a (rows, response) tensor back — the shape of a
log-prob phase. Ray is started for it and stopped after; when a Ray session is already up in
this process it is used as it is.
"""

from __future__ import annotations

import statistics
import time


def _update_seconds(shape) -> float:
    """Median seconds of a one-minibatch ``ActorWorker.update`` of 16 rows on 1 thread, in
    this process (the profile's or a Ray actor's)."""
    import torch

    from placerl.algos.objectives import PolicyObjective
    from placerl.config.schema import OptimConfig
    from placerl.placement.profile import _timed, build_model
    from placerl.placement.profile_roles import synthetic_batch
    from placerl.roles.actor import ActorWorker

    torch.set_num_threads(1)
    actor = ActorWorker(build_model(shape), OptimConfig(lr=1e-9), total_steps=10_000)
    batch = synthetic_batch(shape, 4, 4, 12, 16)
    return _timed(lambda: actor.update(batch, PolicyObjective()), 5)


def measure_worker_update_extra(shape) -> float:
    """Seconds a Ray worker's update takes beyond the same update in this process: Ray's
    core-worker threads (gRPC, the object store's) share the worker's cores. Both ranks'
    actors run it at once, as a Flatten step does."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        here = _update_seconds(shape)
        remote = ray.remote(num_cpus=1)(_update_seconds)
        there = ray.get([remote.remote(shape) for _ in range(2)])
        return max(0.0, statistics.median(there) - here)
    finally:
        if started:
            ray.shutdown()


def measure_rpc_latency(shape, calls: int = 20) -> float:
    import ray
    import torch

    from placerl.placement.profile_roles import synthetic_batch

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)
        class Echo:
            def call(self, batch):
                torch.set_num_threads(1)
                return batch["old_log_probs"] * 1.0, [("echo", time.time())]

        actors = [Echo.remote() for _ in range(2)]
        batch = synthetic_batch(shape, 8, 4, 12, 32)
        halves = (batch[:16], batch[16:])
        ray.get([a.call.remote(h) for a, h in zip(actors, halves, strict=True)])  # warm-up
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            outs = ray.get([a.call.remote(h) for a, h in zip(actors, halves, strict=True)])
            torch.cat([o[0] for o in outs])
            times.append(time.perf_counter() - start)
        for a in actors:
            ray.kill(a)
        return statistics.median(times)
    finally:
        if started:
            ray.shutdown()
