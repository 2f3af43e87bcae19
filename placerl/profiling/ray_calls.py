"""The profile's measurements over Ray: a phase call's round trip, and a worker's update.

Every phase of a worker plan is one call per worker: the controller splits the batch, puts
it in the object store, each worker deserializes its share, runs, and returns its result and
spans, which the controller gathers and concatenates. ``rpc_latency`` is that round trip with
no work in it: the median of 20 calls of an echo method on two actors (1 CPU each), sending
each half of a 32-row batch and getting a (rows, response) tensor back — the shape of a
log-prob phase.

A Ray worker's update also takes longer than the same update in-process: Ray's core-worker
threads (gRPC, the object store's) share the worker's cores, so it is slower by a share, not
by a fixed time (+3.5% on the 1.6M model, +6% on the 6M one here). ``worker_update_factor`` is
the median of one ``ActorWorker.update`` in the same two actors at once, as a Flatten step runs
it, over the same update in the profile's process (at least 1), the median of three rounds.

One Ray session serves both: started here and stopped after, or, when one is already up in
this process, used as it is.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

from placerl.profiling.measure import build_model, timed
from placerl.profiling.roles import synthetic_batch


@contextmanager
def _ray_session():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _update_seconds(shape) -> float:
    """Median seconds of a one-minibatch ``ActorWorker.update`` of 16 rows on 1 thread, in
    this process (the profile's or a Ray actor's)."""
    import torch

    from placerl.algos.objectives import PolicyObjective
    from placerl.config.schema import OptimConfig
    from placerl.roles.actor import ActorWorker

    torch.set_num_threads(1)
    actor = ActorWorker(build_model(shape), OptimConfig(lr=1e-9), total_steps=10_000)
    batch = synthetic_batch(shape, 4, 4, 12, 16)
    return timed(lambda: actor.update(batch, PolicyObjective()), 5)


class _Probe:
    """A Ray actor (1 CPU) that echoes a batch and times an update, as a worker would."""

    def call(self, batch):
        import torch

        torch.set_num_threads(1)
        return batch["old_log_probs"] * 1.0, [("echo", time.time())]

    def update_seconds(self, shape) -> float:
        return _update_seconds(shape)


def _rpc_latency(ray, actors, shape, calls: int = 20) -> float:
    import torch

    batch = synthetic_batch(shape, 8, 4, 12, 32)
    halves = (batch[:16], batch[16:])
    ray.get([a.call.remote(h) for a, h in zip(actors, halves, strict=True)])  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        outs = ray.get([a.call.remote(h) for a, h in zip(actors, halves, strict=True)])
        torch.cat([o[0] for o in outs])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _worker_update_factor(ray, actors, shape, rounds: int = 3) -> float:
    """The median over ``rounds`` of (both actors' update at once) / (the same update here),
    the two taking turns: a burst of other work on the machine inflates one round's ratio, not
    the median (one measurement, taken while something else ran, once read 1.95 where the
    next profiles read 1.07-1.09, and every worker plan was predicted 31-42% too slow)."""
    ratios = []
    for _ in range(rounds):
        there = ray.get([a.update_seconds.remote(shape) for a in actors])  # both at once
        here = _update_seconds(shape)  # after: the actors' start-up does not slow it
        ratios.append(statistics.median(there) / here)
    return max(1.0, statistics.median(ratios))


def measure_ray(shape, worker_update: bool = True, also=None) -> dict[str, float]:
    """``rpc_latency`` and (unless ``worker_update`` is off) ``worker_update_factor``, on the
    same two actors; then ``also()``'s measurements, in the same Ray session (a tiny run on
    Ray workers)."""
    with _ray_session() as ray:
        actors = [ray.remote(num_cpus=1)(_Probe).remote() for _ in range(2)]
        out = {"rpc_latency": _rpc_latency(ray, actors, shape)}
        if worker_update:
            out["worker_update_factor"] = _worker_update_factor(ray, actors, shape)
        for actor in actors:
            ray.kill(actor)
        if also is not None:
            out |= also()
    return out
