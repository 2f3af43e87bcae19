"""Methods added to vLLM's worker (``LLM(worker_extension_cls=...)``) so weights reach an
engine core in another process: vLLM's message encoder turns tensors nested in call arguments
into lists, so each tensor travels as (dtype name, shape, raw bytes) and is rebuilt here with
one copy, then fed to the runner's in-place reload."""

from __future__ import annotations

import torch


def pack(tensor: torch.Tensor) -> tuple[str, list[int], bytes]:
    """A tensor as plain data: dtype name, shape and its bytes (CPU, contiguous)."""
    flat = tensor.detach().to("cpu").contiguous()
    raw = flat.view(-1).view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return str(flat.dtype).removeprefix("torch."), list(flat.shape), raw


def unpack(dtype: str, shape: list[int], raw: bytes) -> torch.Tensor:
    kind = getattr(torch, dtype)
    if not raw:
        return torch.empty(shape, dtype=kind)
    return torch.frombuffer(bytearray(raw), dtype=kind).view(shape)


class WeightLoader:
    def placerl_load_weights(self, names: list[str], packed: list) -> None:
        tensors = (unpack(*item) if isinstance(item, (list, tuple)) else item for item in packed)
        self.model_runner.reload_weights(weights_iterator=zip(names, tensors))
