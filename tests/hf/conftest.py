"""Chat models shaped like real Hugging Face checkpoints (Qwen2, Llama), built on disk once.

Both have a ChatML template, no pad token, EOS ``<|endoftext|>``, a generation_config whose
``eos_token_id`` is ``[<|im_end|>, <|endoftext|>]``, tied embeddings and a 32,768-row
embedding (large enough to be real-shaped, small enough for a test; the builder's default is
Qwen2's 151,936).
"""

from __future__ import annotations

import pytest

from tests.conftest import TINY

VOCAB = 32_768
ARCHS = ("qwen2", "llama")


@pytest.fixture(scope="session")
def chat_model_dirs(tmp_path_factory):
    from placerl.models.chat_factory import make_chat_model_dir
    from placerl.models.factory import TinyLlamaSize

    root = tmp_path_factory.mktemp("chat")
    size = TinyLlamaSize(**TINY)
    return {a: make_chat_model_dir(root / a, a, VOCAB, size=size, seed=0) for a in ARCHS}


@pytest.fixture(params=ARCHS)
def chat_model_dir(request, chat_model_dirs):
    """Each architecture in turn."""
    return chat_model_dirs[request.param]


@pytest.fixture
def qwen_dir(chat_model_dirs):
    return chat_model_dirs["qwen2"]
