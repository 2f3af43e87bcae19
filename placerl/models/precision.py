"""``model.precision``: fp32, or bf16 mixed precision (fp32 master weights, bf16 compute).

- Trained models keep fp32 weights and optimizer state; their forward and backward run under
  ``autocast("bf16")``, which computes matmuls in bf16 (under FSDP2 the runtime's
  ``MixedPrecisionPolicy`` casts the parameters instead, runtime/ray/data_parallel.py).
- Frozen models (reference, reward model, a frozen sampler) are held in ``frozen_dtype``: bf16
  with bf16 training, so they take half the memory and compute as the trained models do.
- Sampling runs under the same autocast (rollout/sampling.py), so the rollout's distribution
  is the one training sees; π_old for the PPO ratio is recomputed by the trainer's own forward
  under bf16 (``staleness.recompute_log_probs: auto``), since a KV-cache decode and a full
  forward round differently in bf16 (the ratio of a fresh batch then starts at 1).
"""

from __future__ import annotations

import contextlib

import torch


def compute_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16" else torch.float32


def frozen_dtype(precision: str) -> torch.dtype:
    """The dtype frozen models are loaded in: the training compute dtype."""
    return compute_dtype(precision)


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str | None = None):
    """bf16 autocast for forward/backward when ``precision`` is bf16; fp32: nothing.

    ``device`` names the device type to autocast; by default every type this process computes
    on (CPU, and CUDA when torch sees it), so a caller need not know where its model lives:
    an autocast for the wrong device type would silently leave a GPU forward in fp32.
    """
    if precision != "bf16":
        yield
        return
    types = [torch.device(device).type] if device is not None else ["cpu"]
    if device is None and torch.cuda.is_available():
        types.append("cuda")
    with contextlib.ExitStack() as stack:
        for kind in types:
            stack.enter_context(torch.autocast(device_type=kind, dtype=torch.bfloat16))
        yield
