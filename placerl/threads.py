"""torch's CPU threads for the process that trains, set on purpose and said at start.

Under ``strategy: local`` (and ``auto`` when its pick is the local plan) every
model computes in this one process, with torch's intra-op thread pool. Left to itself torch
takes every core; on a machine other processes share, those threads wait on each other: a
GRPO update of issue 21 took 4.0 s with the default and 0.24 s with ``OMP_NUM_THREADS=1``. So
the count is chosen here, once, before any model loads, from (first that is set):

1. ``placement.threads_per_worker`` — the knob Ray workers already read for their slots;
2. ``OMP_NUM_THREADS`` — the environment's word, as torch itself would read it;
3. every core this process may run on (its affinity mask) — what torch would take anyway,
   made explicit.

The choice is printed in the startup summary (``placerl/startup.py``), with what to change.
Under Ray strategies each worker sets its slot's threads itself (``runtime/ray/host.py``);
the controller's own count is reported, not changed. The count is the same for a run and its
resume (unless the config says otherwise), so CPU results stay bitwise reproducible.
"""

from __future__ import annotations

import os

import torch

from placerl.config.placement import PlacementConfig
from placerl.errors import UserError
from placerl.placement.plan.cluster import available_cores


def configure_threads(placement: PlacementConfig, in_process: bool | None = None) -> str:
    """Set torch's threads for an in-process run (module doc); returns the summary's words.
    ``in_process``: whether every model computes in this process (``runs_in_process``:
    strategy local, or auto's pinned pick of the local plan); default: strategy local."""
    cores = available_cores()
    if not (placement.strategy == "local" if in_process is None else in_process):
        workers = "placement.threads_per_worker" if placement.threads_per_worker else "the Plan"
        return f"{torch.get_num_threads()} torch threads in the controller (workers: {workers})"
    threads, source = local_threads(placement.threads_per_worker, cores)
    torch.set_num_threads(threads)
    over = f"; more than the {cores} cores" if threads > cores else ""
    return f"{threads} torch thread{'s' if threads > 1 else ''} ({source}{over})"


def local_threads(threads_per_worker: int | None, cores: int) -> tuple[int, str]:
    """How many threads an in-process run takes, and which setting said so."""
    if threads_per_worker:
        return threads_per_worker, "placement.threads_per_worker"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UserError(
                f"OMP_NUM_THREADS={env!r}: expected a whole number >= 1, or unset it",
                where="environment",
            )
        return int(env), "OMP_NUM_THREADS"
    return cores, "every core this process may use; placement.threads_per_worker to change"
