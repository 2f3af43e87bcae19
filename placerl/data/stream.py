"""Prompt sets and the deterministic order in which training visits examples.

``IndexStream`` is the data position of a run: it shuffles once per epoch with a seed derived
from (seed, epoch), so its whole state is two integers and resume is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from placerl.data.collate import encode_prompts, left_pad
from placerl.errors import UserError


@dataclass
class IndexStream:
    """Yields batches of example indices, epoch after epoch, reproducibly."""

    size: int
    batch_size: int
    seed: int = 0
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def next_batch(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.batch_size:
            if not self._order or self.position >= self.size:
                if self._order:  # finished an epoch
                    self.epoch, self.position = self.epoch + 1, 0
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
                self._order = torch.randperm(self.size, generator=generator).tolist()
            take = min(self.batch_size - len(out), self.size - self.position)
            out.extend(self._order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = []
        if self.position:  # rebuild this epoch's order without advancing
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._order = torch.randperm(self.size, generator=generator).tolist()


@dataclass
class PromptSet:
    """Prompts tokenized once, with the other dataset columns the reward may need.

    ``texts`` are what the model sees (chat prompts rendered by the template); ``given`` the
    prompts as the dataset gave them (a string, or a list of messages), which is what a
    reward function receives, as in TRL. None: the same as ``texts``.
    """

    texts: list[str]
    token_ids: list[list[int]]
    columns: dict[str, list]
    given: list | None = None

    @classmethod
    def build(
        cls,
        texts: list[str],
        columns: dict[str, list],
        tokenizer,
        max_len: int,
        source: str,
        given: list | None = None,
    ):
        try:
            ids = encode_prompts(tokenizer, texts, max_len)
        except UserError as err:  # name the file the row came from
            raise UserError(err.message, where=f"{source} {err.where}") from None
        return cls(texts, ids, columns, given)

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, indices: list[int], pad_id: int, repeat: int = 1) -> PromptBatch:
        """The prompts at ``indices``, each repeated ``repeat`` times consecutively (groups)."""
        expanded = [i for i in indices for _ in range(repeat)]
        ids, mask = left_pad([self.token_ids[i] for i in expanded], pad_id)
        return PromptBatch(
            ids=ids,
            mask=mask,
            texts=[self.texts[i] for i in expanded],
            columns={k: [v[i] for i in expanded] for k, v in self.columns.items()},
            given=None if self.given is None else [self.given[i] for i in expanded],
        )


@dataclass
class PromptBatch:
    ids: torch.Tensor  # (B, P) left-padded
    mask: torch.Tensor  # (B, P)
    texts: list[str]
    columns: dict[str, list]
    given: list | None = None  # the prompts as the dataset gave them (see PromptSet)

    def as_given(self) -> list:
        """What a reward function gets as ``prompts``: strings, or lists of chat messages."""
        return self.texts if self.given is None else self.given
