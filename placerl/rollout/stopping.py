"""Stop strings: end a row once its decoded response text contains one of them.

Stop strings live in text space (a stop string may span several tokens, or be part of one),
so the check decodes. That costs a host copy and Python work per running row, which is why
the sampling loop builds a ``StopStrings`` only when some stop strings were asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class StopStrings:
    """Checks, step by step, which running rows have just completed a stop string."""

    def __init__(self, tokenizer, stop_strings: Sequence[str]) -> None:
        if any(not s for s in stop_strings):
            raise ValueError(
                f"stop_strings={tuple(stop_strings)!r}: the empty string stops at once"
            )
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)

    def completed(self, responses: Tensor) -> Tensor:
        """(A,) bool: which of these running rows' (A, T) responses now contain a stop string.

        Rows are checked every step, so the first step at which the text contains a stop
        string is the step whose token completed it: that token stays, and the row ends.
        """
        texts = self.tokenizer.batch_decode(responses.tolist())
        hits = [any(s in text for s in self.stop_strings) for text in texts]
        return torch.tensor(hits, dtype=torch.bool, device=responses.device)
