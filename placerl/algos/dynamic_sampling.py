"""DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476, §3.2), as pure data handling.

A group (the samples of one prompt) whose rewards are all equal has advantage 0 under every
group baseline (GRPO, RLOO, Dr. GRPO): it adds no gradient, only dilutes the batch. DAPO
over-samples and keeps only groups with signal — for 0/1 accuracy, 0 < #correct < G; for any
reward, "not all equal" — "until the batch is fully filled". Here:

- ``groups_with_signal`` is the filter. It compares values (max > min), which is exact in any
  float type: a group is filtered iff its rewards are bit-identical; the smallest difference
  (one ulp) keeps it. A group holding a NaN has no signal (NaN compares false) and is dropped.
- ``SignalGroups`` accumulates successive sampled batches, keeping the groups with signal,
  until it holds ``target_groups`` of them or ``max_rounds`` batches were sampled; it reports
  the rounds and the filtered share. It never samples: the pipeline asks it what is missing
  (``missing_groups``), samples that many prompts (or more), and ``add``s the batch.
- ``concat_batches`` joins batches of different prompt and response widths into one
  ``[prompt | response]`` batch (prompts re-padded on the left, responses on the right).

Departures from the paper: the paper samples without a cap on rounds; here ``max_rounds``
caps them and an incomplete accumulator hands back the groups it has (``complete`` is 0 in the
stats; veRL's recipe raises instead) — the caller decides whether to train on fewer groups,
or (``batch(fill=True)``, what the pipeline does) to top the batch up with the first groups
without signal it saw, so that every step trains on the same number of groups (their
advantage is 0 under a group baseline: they add no gradient, as in GRPO without the filter).
Groups with signal beyond the target are discarded (as veRL's recipe trims to the batch size),
first come first kept; they are counted as ``surplus_groups``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict
from torch import Tensor

from placerl.types import Batch, Field

PROMPT_FIELDS = (Field.PROMPT_IDS, Field.PROMPT_MASK)  # (B, P), left-padded
SEQUENCE_FIELDS = (Field.INPUT_IDS, Field.ATTENTION_MASK)  # (B, P + R), [prompt | response]
TOKEN_FIELDS = (Field.PROMPT_IDS, Field.INPUT_IDS, Field.RESPONSE_IDS)  # padded with the pad id


def groups_with_signal(scores: Tensor, group_size: int) -> Tensor:
    """(N / group_size,) bool: groups of consecutive samples whose scores are not all equal."""
    if group_size < 2 or scores.numel() % group_size != 0:
        raise ValueError(
            f"dynamic sampling needs groups of >= 2 samples that divide the batch; got "
            f"group_size={group_size} for {scores.numel()} samples"
        )
    groups = scores.reshape(-1, group_size)
    return groups.amax(dim=1) > groups.amin(dim=1)


@dataclass
class SignalGroups:
    """Keeps the groups with reward signal from successive sampled batches.

    ``add`` one sampled batch per round (groups of ``group_size`` consecutive rows, scored in
    ``score_key``); stop when ``done``; ``batch()`` is the kept groups in arrival order,
    at most ``target_groups``. ``stats()`` are floats for the metrics log.
    """

    target_groups: int
    group_size: int
    max_rounds: int
    score_key: str = Field.SCORES
    pad_token_id: int = 0
    rounds: int = field(default=0, init=False)
    sampled_groups: int = field(default=0, init=False)
    signal_groups: int = field(default=0, init=False)  # groups with signal seen, kept or surplus
    filler_groups: int = field(default=0, init=False)  # groups without signal kept for fill
    _parts: list[Batch] = field(default_factory=list, repr=False)
    _fillers: list[Batch] = field(default_factory=list, repr=False)

    def __post_init__(self):
        checks = {
            "target_groups": (self.target_groups, 1),
            "group_size": (self.group_size, 2),
            "max_rounds": (self.max_rounds, 1),
        }
        for name, (value, least) in checks.items():
            if value < least:
                raise ValueError(f"dynamic sampling {name}={value}: expected >= {least}")

    @property
    def kept_groups(self) -> int:
        return min(self.signal_groups, self.target_groups)

    @property
    def missing_groups(self) -> int:
        """Groups with signal still needed to reach the target (0 when complete)."""
        return max(self.target_groups - self.signal_groups, 0)

    @property
    def done(self) -> bool:
        return self.missing_groups == 0 or self.rounds >= self.max_rounds

    def add(self, batch: Batch) -> None:
        """One sampled round: keep its groups with signal, up to the number still missing."""
        if self.done:
            raise ValueError(
                f"dynamic sampling is done ({self.kept_groups}/{self.target_groups} groups "
                f"after {self.rounds} of at most {self.max_rounds} rounds); take batch()"
            )
        signal = groups_with_signal(batch[self.score_key], self.group_size)  # (G,)
        missing = self.missing_groups
        keep = signal & (signal.cumsum(0) <= missing)  # the first `missing` groups with signal
        self._parts.append(batch[keep.repeat_interleave(self.group_size)])
        flat = ~signal
        spare = flat & (flat.cumsum(0) <= self.target_groups - self.filler_groups)
        if bool(spare.any()):
            self._fillers.append(batch[spare.repeat_interleave(self.group_size)])
            self.filler_groups += int(spare.sum())
        self.rounds += 1
        self.sampled_groups += signal.numel()
        self.signal_groups += int(signal.sum())

    def batch(self, fill: bool = False) -> Batch:
        """The kept groups of every round, in arrival order, as one batch; with ``fill``, then
        the first groups without signal, up to ``target_groups`` in all (when they exist)."""
        if not self._parts:
            raise ValueError("dynamic sampling has no sampled batch yet: add() one first")
        parts = list(self._parts)
        rows = self.filled_groups(fill) * self.group_size
        if rows:
            parts.append(concat_batches(self._fillers, self.pad_token_id)[:rows])
        return concat_batches(parts, self.pad_token_id)

    def filled_groups(self, fill: bool = True) -> int:
        """Groups without signal that ``batch(fill)`` adds."""
        return min(self.missing_groups, self.filler_groups) if fill else 0

    def stats(self) -> dict[str, float]:
        sampled = max(self.sampled_groups, 1)
        return {
            "dynamic_sampling/rounds": float(self.rounds),
            # groups without signal over all sampled groups: what the filter threw away
            "dynamic_sampling/filtered_share": 1.0 - self.signal_groups / sampled,
            "dynamic_sampling/kept_groups": float(self.kept_groups),
            "dynamic_sampling/surplus_groups": float(self.signal_groups - self.kept_groups),
            "dynamic_sampling/complete": float(self.missing_groups == 0),
        }


def concat_batches(parts: Sequence[Batch], pad_token_id: int = 0) -> Batch:
    """Rows of ``parts`` in order, as one batch of the ``[prompt | response]`` layout.

    Prompt fields are left-padded to the widest prompt, response fields (every other 2-D
    field) right-padded to the widest response, and ``input_ids`` / ``attention_mask`` are
    split at each part's prompt width and padded on both sides accordingly. Token ids are
    padded with ``pad_token_id``, everything else with 0. All parts must have the same fields.
    """
    keys = set(parts[0].keys())
    for i, part in enumerate(parts):
        if set(part.keys()) != keys:
            raise ValueError(
                f"cannot join batches with different fields: part 0 has {sorted(keys)}, "
                f"part {i} has {sorted(part.keys())}"
            )
    prompt_width = max((_width(p, Field.PROMPT_MASK) for p in parts), default=0)
    response_width = max((_width(p, Field.RESPONSE_MASK) for p in parts), default=0)
    fields = {}
    for key in keys:
        fill = pad_token_id if key in TOKEN_FIELDS else 0
        pieces = [_fit(p, key, fill, prompt_width, response_width) for p in parts]
        fields[key] = torch.cat(pieces, dim=0)
    return TensorDict(fields, batch_size=[sum(p.batch_size[0] for p in parts)])


def _width(part: Batch, key: str) -> int:
    return part[key].shape[1] if key in part.keys() else 0  # noqa: SIM118 (TensorDict)


def _fit(part: Batch, key: str, fill: int, prompt_width: int, response_width: int) -> Tensor:
    """One part's field padded to the common widths."""
    value = part[key]
    if value.dim() < 2:
        return value
    if key in PROMPT_FIELDS:
        return _pad(value, prompt_width - value.shape[1], 0, fill)
    if key in SEQUENCE_FIELDS:
        own = _width(part, Field.PROMPT_MASK)
        prompt, response = value[:, :own], value[:, own:]
        return torch.cat(
            [
                _pad(prompt, prompt_width - own, 0, fill),
                _pad(response, 0, response_width - response.shape[1], fill),
            ],
            dim=1,
        )
    return _pad(value, 0, response_width - value.shape[1], fill)


def _pad(t: Tensor, left: int, right: int, fill: int) -> Tensor:
    """t with ``left`` columns before and ``right`` after dim 1, filled with ``fill``."""
    if left == 0 and right == 0:
        return t
    before = t.new_full((t.shape[0], left, *t.shape[2:]), fill)
    after = t.new_full((t.shape[0], right, *t.shape[2:]), fill)
    return torch.cat([before, t, after], dim=1)
