"""Weight sync: the trainer's weights onto the rollout's own copy, verified.

- ``transport``: named tensors, buckets, the broadcast, fingerprints and checksums;
- ``consumers``: what receives them: a shadow module in this process (``LocalShadow``), an
  inference engine (``EngineSync``; a LoRA model's adapters merged first), an HF copy on a
  rollout worker that feeds its engine;
- ``workers``: who takes part on Ray workers (``sync_ranks``, from the Plan alone), each
  worker's part (``sync_on_host``) and the controller's (``RemoteRolloutSync``);
- ``guard``: after every sync, the fingerprints of what arrived must equal what was sent, and
  the next batch's |log π_old − log μ| must stay under a documented bound, or the run stops
  with ``SyncError``.

The experience pipeline drives a ``RolloutSync``; it alone decides when to sync.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from placerl.runtime.sync.transport import SyncStats


class RolloutSync(Protocol):
    """Moves the trainer's weights to the rollout's copy, and saves/restores that copy."""

    def sync(self) -> SyncStats: ...  # raises guard.SyncError when what arrived differs

    def rollout_state(self) -> dict[str, Tensor]: ...

    def load_rollout_state(self, state: dict[str, Tensor]) -> None: ...
