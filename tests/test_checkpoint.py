"""Checkpoints are atomic: a half-written one is never taken for a checkpoint."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from placerl.checkpoint import latest_checkpoint, list_checkpoints, load_weights, save_checkpoint
from placerl.models.loading import load_policy, load_tokenizer


def test_checkpoint_loads_with_from_pretrained_and_prunes(tiny_model_dir, tmp_path):
    tok, model = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"policy": model}, tok, {"x": step}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    loaded = AutoModelForCausalLM.from_pretrained(latest_checkpoint(tmp_path) / "policy")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_interrupted_write_is_ignored(tiny_model_dir, tmp_path):
    tok, model = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    save_checkpoint(tmp_path, 1, {"policy": model}, tok, {})
    (tmp_path / ".tmp-step_000002-999").mkdir()  # a process killed while writing step 2
    (tmp_path / ".tmp-step_000002-999" / "trainer_state.pt").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step_000001"


def test_load_weights_is_exact(tiny_model_dir, tmp_path):
    tok, model = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    path = save_checkpoint(tmp_path, 1, {"policy": model}, tok, {})
    other = load_policy(tiny_model_dir)
    load_weights(other, path / "policy")
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_models_with_tied_embeddings_round_trip(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "<pad>": 1}, unk_token="a")),
        pad_token="<pad>",
    )
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=2, n_embd=8, n_layer=1, n_head=2, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    path = save_checkpoint(tmp_path, 1, {"policy": model}, tok, {})
    other = GPT2LMHeadModel(config)
    load_weights(other, path / "policy")
    assert other.lm_head.weight.data_ptr() == other.transformer.wte.weight.data_ptr()
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


def test_critic_and_policy_run_without_dropout(tiny_model_dir):
    from placerl.models.loading import load_value_model

    tok = load_tokenizer(tiny_model_dir)
    for model in (load_policy(tiny_model_dir), load_value_model(tiny_model_dir, tok.pad_token_id)):
        assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
