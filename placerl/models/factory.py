"""The embedded default model: a tokenizer trained here and a small Llama built from a config.

Nothing is downloaded. The tokenizer is a byte-level BPE trained with ``tokenizers`` on the
built-in task's text (plus a little English so user prompts tokenize sensibly); digits are
always split one per token, which arithmetic needs. The model is a ``transformers`` Llama, so
everything downstream (saving, loading, ``from_pretrained``) is the ordinary Hugging Face path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from placerl.models.tokens import SOURCE_ATTR, copy_tokenizer_files

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"

# A plain chat template so `messages` datasets work with the default tokenizer.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

_ENGLISH = (
    "The quick brown fox jumps over the lazy dog. What is the sum of these numbers? "
    "Answer the question. user: assistant: system: Please add them and reply with the result."
)


@dataclass(frozen=True)
class TinyLlamaSize:
    """Dimensions of the built-in Llama. The default has about 6M parameters."""

    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 256


def train_digit_bpe(
    texts: list[str], vocab_size: int, special_tokens: list[str] = (), unk_token: str | None = None
) -> Tokenizer:
    """A byte-level BPE trained on ``texts`` with digits always split one per token (the
    built-in tasks need it); shared by the default and the chat test tokenizers."""
    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tokenizer(corpus: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``corpus`` with digits split individually."""
    tok = train_digit_bpe([*corpus, _ENGLISH], vocab_size, [PAD, BOS, EOS, UNK], UNK)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerFast, size: TinyLlamaSize | None = None, seed: int = 0
) -> LlamaForCausalLM:
    """A randomly initialised Llama sized for a CPU, matching ``tokenizer``'s special tokens."""
    size = size or TinyLlamaSize()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        max_position_embeddings=size.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: Path) -> None:
    """Save the tokenizer next to an exported model.

    A tokenizer ``load_tokenizer`` read from a directory is exported as that directory's own
    files, byte for byte: what the run changed in memory (a pad token for padding, the padding
    side) never reaches disk, and ``tokenizer_class`` stays what the user's config says. A
    tokenizer built here is serialised; transformers 5 records its own backend class name,
    which older tools (and TRL's loaders) do not know, so the portable fast class is named."""
    source = getattr(tokenizer, SOURCE_ATTR, None)
    if source is not None and copy_tokenizer_files(source, path):
        return
    tokenizer.save_pretrained(path)
    config_file = Path(path) / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2))


def make_model_dir(
    path: Path, corpus: list[str], size: TinyLlamaSize | None = None, seed: int = 0
) -> Path:
    """Build tokenizer + tiny Llama and save both under ``path`` (a from_pretrained directory)."""
    path = Path(path)
    tokenizer = build_tokenizer(corpus)
    model = build_tiny_llama(tokenizer, size, seed)
    model.save_pretrained(path)
    save_tokenizer(tokenizer, path)
    return path
