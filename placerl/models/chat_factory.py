"""Tiny chat models shaped like real ones (Qwen2 and Llama), built here: nothing downloads.

They carry the Hugging Face conventions placerl must handle in user models, and which the
embedded default model (``models/factory.py``) does not have:

- a ChatML chat template (``<|im_start|>role\\n…<|im_end|>\\n``, Qwen2's);
- no pad token, and the tokenizer's EOS is ``<|endoftext|>`` (a base tokenizer's);
- ``generation_config.json`` whose ``eos_token_id`` is a list, ``[<|im_end|>, <|endoftext|>]``,
  as in Qwen2.5-Instruct, so a chat response ends at ``<|im_end|>``;
- tied input and output embeddings;
- a large vocabulary: the embedding has ``vocab_size`` rows (151,936 like Qwen2 by default)
  over a small byte-level BPE trained on ``corpus``, special tokens added after it (ids past
  the BPE's, like Qwen2's); the rows no token uses are there, as in real checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from placerl.models.factory import TinyLlamaSize, train_digit_bpe

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
QWEN2_VOCAB = 151_936

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2.5-Instruct's template with tools (its structure and text; the default system prompt
# shortened): tool schemas in the system turn, assistant tool calls re-serialised as
# ``<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>``, consecutive tool results
# grouped into one ``user`` turn of ``<tool_response>`` blocks.
QWEN25_TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query."
    "\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": '
    '<function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}'
    "{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or "
    "(message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{\\"name\\": \\"\' }}{{- tool_call.name }}'
    "{{- '\\\", \\\"arguments\\\": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != 'tool') %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}{{- '<|im_end|>\\n' }}"
    "{%- endif %}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
TOOL_CALL_TOKENS = ("<tool_call>", "</tool_call>")  # added (not special) tokens, as in Qwen2.5

# The tokenizer_class a real checkpoint of each architecture names (kept on export).
TOKENIZER_CLASS = {"qwen2": "Qwen2Tokenizer", "llama": "PreTrainedTokenizerFast"}

_TEXT = (
    "The quick brown fox jumps over the lazy dog. Reverse the letters. Add the numbers. "
    "user assistant system You are a helpful assistant. The answer is 0 1 2 3 4 5 6 7 8 9."
)


def build_chat_tokenizer(corpus: list[str] | None = None, bpe_size: int = 512, tools: bool = False):
    """A byte-level BPE with ChatML special tokens, EOS ``<|endoftext|>`` and no pad token;
    ``tools``: Qwen2.5's tool template and its ``<tool_call>`` tokens (added, not special)."""
    tok = train_digit_bpe([*(corpus or []), _TEXT], bpe_size)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=ENDOFTEXT)
    fast.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    fast.chat_template = CHATML_TEMPLATE
    if tools:
        fast.add_tokens(list(TOOL_CALL_TOKENS))
        fast.chat_template = QWEN25_TOOLS_TEMPLATE
    assert fast.pad_token is None and fast.bos_token is None
    return fast


def build_chat_model(
    tokenizer,
    arch: Literal["qwen2", "llama"] = "qwen2",
    vocab_size: int = QWEN2_VOCAB,
    size: TinyLlamaSize | None = None,
    seed: int = 0,
):
    """A random Qwen2 or Llama causal LM with tied embeddings and list-valued end tokens."""
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size={vocab_size} is below the tokenizer's {len(tokenizer)}")
    size = size or TinyLlamaSize()
    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        max_position_embeddings=size.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=endoftext,
        eos_token_id=endoftext,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(f"arch={arch!r}: expected 'qwen2' or 'llama'")
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext]
    )
    return model


def make_chat_model_dir(
    path: str | Path,
    arch: Literal["qwen2", "llama"] = "qwen2",
    vocab_size: int = QWEN2_VOCAB,
    corpus: list[str] | None = None,
    size: TinyLlamaSize | None = None,
    seed: int = 0,
    tools: bool = False,
) -> Path:
    """Build tokenizer + model and save both under ``path``, as a real checkpoint looks:
    ``config.json``, ``generation_config.json`` (a list of end tokens), tokenizer files
    naming the architecture's ``tokenizer_class`` and no pad token (``tools``: see
    ``build_chat_tokenizer``)."""
    path = Path(path)
    tokenizer = build_chat_tokenizer(corpus, tools=tools)
    model = build_chat_model(tokenizer, arch, vocab_size, size, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = TOKENIZER_CLASS[arch]
    config["pad_token"] = None  # Qwen2Tokenizer would default to <|endoftext|> otherwise
    config_file.write_text(json.dumps(config, indent=2))
    return path
