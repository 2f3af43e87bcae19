"""Tiny causal LMs and hand-built rollout batches for the memory tests (no tokenizer, no files).

A batch has the [left-padded prompt | right-padded response] layout of ``placerl.types``,
``groups`` prompts repeated ``group_size`` times each (a GRPO batch), responses of different
lengths, and every per-token field a policy or value loss reads.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from placerl.types import Field

VOCAB = 61


def tiny_lm(seed: int = 0, tied: bool = False, arch: str = "llama", vocab: int = VOCAB):
    torch.manual_seed(seed)
    cls, config = {
        "llama": (LlamaForCausalLM, LlamaConfig),
        "qwen2": (Qwen2ForCausalLM, Qwen2Config),
    }[arch]
    cfg = config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return cls(cfg).float()


def rollout_batch(
    groups: int = 3, group_size: int = 3, seed: int = 0, vocab: int = VOCAB, zero_groups=()
) -> TensorDict:
    """A batch of ``groups`` × ``group_size`` rows; groups in ``zero_groups`` get advantage 0."""
    g = torch.Generator().manual_seed(seed)
    rows = groups * group_size
    prompt_lens = torch.randint(2, 6, (groups,), generator=g).repeat_interleave(group_size)
    response_lens = torch.randint(1, 7, (rows,), generator=g)
    width, response_width = int(prompt_lens.max()), int(response_lens.max())
    prompts = torch.randint(3, vocab, (groups, width), generator=g).repeat_interleave(group_size, 0)
    cols = torch.arange(width)
    prompt_mask = (cols >= width - prompt_lens[:, None]).long()
    prompt_ids = prompts * prompt_mask
    response_mask = (torch.arange(response_width) < response_lens[:, None]).long()
    response_ids = torch.randint(3, vocab, (rows, response_width), generator=g) * response_mask
    adv = torch.randn(groups, group_size, generator=g)
    for z in zero_groups:
        adv[z] = 0.0
    adv = adv.reshape(-1, 1) * response_mask
    fields = {
        Field.PROMPT_IDS: prompt_ids,
        Field.PROMPT_MASK: prompt_mask,
        Field.RESPONSE_IDS: response_ids,
        Field.RESPONSE_MASK: response_mask,
        Field.INPUT_IDS: torch.cat([prompt_ids, response_ids], 1),
        Field.ATTENTION_MASK: torch.cat([prompt_mask, response_mask], 1),
        Field.OLD_LOG_PROBS: -2.0 + 0.3 * torch.randn(rows, response_width, generator=g),
        Field.REF_LOG_PROBS: -2.0 + 0.3 * torch.randn(rows, response_width, generator=g),
        Field.ADVANTAGES: adv.float(),
        Field.VALUES: torch.randn(rows, response_width, generator=g),
        Field.RETURNS: torch.randn(rows, response_width, generator=g),
        Field.SCORES: torch.randn(rows, generator=g),
    }
    return TensorDict(fields, batch_size=[rows])
