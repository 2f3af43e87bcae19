"""Methods added to vLLM's worker (``LLM(worker_extension_cls=...)``), so weights can be sent
to an engine core that runs in another process: names and tensors travel as two lists (what
vLLM's message encoder carries), and the worker feeds them to its runner's in-place reload."""

from __future__ import annotations


class WeightLoader:
    def placerl_load_weights(self, names: list[str], tensors: list) -> None:
        self.model_runner.reload_weights(weights_iterator=zip(names, tensors))
