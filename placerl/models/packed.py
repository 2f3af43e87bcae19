"""Forward passes over packed rows (``data/packing.py``), and which layouts a model honours.

Several sequences share a row only if the model keeps them apart: the ``shared`` layout passes
an explicit (N, 1, W, W) mask, the ``packed`` layout relies on the model reading position ids
that restart at 0 as sequence starts (transformers does, with ``attention_mask=None``: flash
attention turns them into variable-length sequences on GPU, the other kernels into a block
mask). ``choose_layout`` checks once, on the actual model, that a layout computes what each
sequence alone would; a model that does not gets the next layout, and finally ``padded``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from placerl.data.packing import LAYOUTS, Packed, pack
from placerl.models.device import on_model_device
from placerl.models.lm_head import selected_log_probs


def sequence_sums(model, packed: Packed) -> Tensor:
    """(S,) float32 Σ_t log π(y_t | ·) over each sequence's response tokens; only response
    positions go through the LM head, in chunks (models/lm_head.selected_log_probs);
    computed, and returned, on the model's device."""
    packed = on_model_device(packed, model)
    kwargs = {}
    if packed.attention_mask is not None:
        kwargs["attention_mask"] = packed.attention_mask.unsqueeze(1)  # (N, 1, W, W)
    token_log_probs = selected_log_probs(
        model,
        packed.sources,
        packed.targets,
        input_ids=packed.input_ids,
        position_ids=packed.position_ids,
        **kwargs,
    )  # (T,)
    sums = token_log_probs.new_zeros(packed.num_sequences)
    return sums.index_add(0, packed.owners, token_log_probs)


@torch.no_grad()
def layout_works(model, layout: str) -> bool:
    """Whether ``model`` scores random groups laid out in ``layout`` as it scores each
    sequence alone. The groups are chosen so that rows hold several items in every layout."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist()

    groups = [(ids(3), [ids(5)]), (ids(2), [ids(3), ids(1)]), (ids(1), [ids(1)])]
    together = sequence_sums(model, pack(groups, 0, layout))
    alone = [
        sequence_sums(model, pack([(prompt, [response])], 0, "padded"))
        for j in range(2)
        for prompt, responses in groups
        for response in responses[j : j + 1]
    ]
    model.train(was_training)
    return torch.allclose(together, torch.cat(alone), rtol=1e-4, atol=1e-4)


def choose_layout(*models, order: tuple[str, ...] = LAYOUTS) -> str:
    """The first layout of ``order`` that every model honours (``padded`` always works)."""
    for layout in order:
        if layout == "padded" or all(layout_works(model, layout) for model in models):
            return layout
    return "padded"
