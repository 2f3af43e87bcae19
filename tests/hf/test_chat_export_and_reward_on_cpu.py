"""A tokenizer without a pad token is padded in memory only (files exported unchanged), the
reward model reads its score at the same token in RM training and in PPO scoring, and models
load with the configured attention implementation."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from placerl.algos.reward_model import RewardModelTraining
from placerl.checkpoint import export_model
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.data.collate import encode_prompts, left_pad, right_pad
from placerl.data.formats import to_preference_triple
from placerl.errors import UserError
from placerl.models.chat_factory import IM_END
from placerl.models.loading import LoadOptions, load_policy, load_reward_model, load_tokenizer
from placerl.models.scores import sequence_scores
from placerl.models.tokens import TOKENIZER_FILES, target_end
from placerl.roles.reward import ModelReward
from placerl.types import Field
from tests.hf.test_chat_targets_on_cpu import CHAT_PREF


def _copy(src, tmp_path, name="user_model"):
    """A private copy: the pad warning is said once per directory and process."""
    return shutil.copytree(src, tmp_path / name)


def _tokenizer_files(path) -> dict[str, bytes]:
    return {n: (path / n).read_bytes() for n in TOKENIZER_FILES if (path / n).exists()}


def test_missing_pad_is_padded_in_memory_warned_once_and_never_exported(
    chat_model_dir, tmp_path, caplog
):
    src = _copy(chat_model_dir, tmp_path)
    before = _tokenizer_files(src)
    with caplog.at_level(logging.WARNING, logger="placerl.models.loading"):
        tok = load_tokenizer(src)
        load_tokenizer(src)
    said = [r for r in caplog.records if "no pad token" in r.getMessage()]
    assert len(said) == 1 and "EOS" in said[0].getMessage()
    assert tok.pad_token_id == tok.eos_token_id  # in memory, for padding under masks

    out = export_model(load_policy(src), tok, tmp_path / "exported")
    assert _tokenizer_files(out) == before  # byte for byte: no pad, same tokenizer_class
    assert json.loads((out / "config.json").read_text()).get("pad_token_id") is None
    reloaded, original = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(src)
    assert reloaded.pad_token is None and type(reloaded) is type(original)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert (
        config["tokenizer_class"] == json.loads(before["tokenizer_config.json"])["tokenizer_class"]
    )


def test_exported_policy_keeps_chat_template_and_generation_config(chat_model_dir, tmp_path):
    tok, policy = load_tokenizer(chat_model_dir), load_policy(chat_model_dir)
    out = export_model(policy, tok, tmp_path / "policy")
    model = AutoModelForCausalLM.from_pretrained(out)
    reloaded = AutoTokenizer.from_pretrained(out)
    im_end = reloaded.convert_tokens_to_ids(IM_END)
    assert model.generation_config.eos_token_id == [im_end, reloaded.eos_token_id]
    messages = CHAT_PREF["prompt"]
    assert reloaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )
    ids = torch.tensor([[1, 2, 3, im_end]])
    assert torch.equal(model(ids).logits, policy(ids).logits)


def test_reward_model_export_writes_no_pad_id(chat_model_dir, tmp_path):
    tok = load_tokenizer(chat_model_dir)
    out = export_model(load_reward_model(chat_model_dir), tok, tmp_path / "rm")
    config = json.loads((out / "config.json").read_text())
    assert config.get("pad_token_id") is None and "SequenceClassification" in str(config)
    assert load_reward_model(out, trained=True).config.pad_token_id is None


def _instruct_copy(src, tmp_path):
    """The model with an instruct tokenizer's EOS, <|im_end|> (Qwen2.5-Instruct's): padded
    with EOS, the pad id is then the very token the score must be read at."""
    path = _copy(src, tmp_path, "instruct")
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(config | {"eos_token": IM_END}))
    return path


@pytest.mark.parametrize("eos", ["base", "instruct"])
@torch.no_grad()
def test_the_same_response_gets_the_same_score_in_rm_training_and_ppo_scoring(
    chat_model_dir, tmp_path, eos
):
    """RM training right-pads [prompt | response]; PPO scoring sees a left-padded prompt and a
    right-padded sampled response. Both read the last attended token: the response's
    <|im_end|>, which the pad choice (pad = EOS: <|endoftext|>, or <|im_end|> itself for an
    instruct tokenizer, where a pad-id rule would skip it) must not move."""
    path = chat_model_dir if eos == "base" else _instruct_copy(chat_model_dir, tmp_path)
    tok = load_tokenizer(path)
    model = load_reward_model(path)
    generator = torch.Generator().manual_seed(0)  # a head that is not ~0: tokens score apart
    model.score.weight.copy_(torch.randn(model.score.weight.shape, generator=generator))
    training = RewardModelTraining(
        model, tok, None, None, max_len=64, grad_clip=None, precision="fp32"
    )
    prompt, chosen, rejected = to_preference_triple(CHAT_PREF, tok)
    long_pair = (prompt + "Think first. ", chosen + "", rejected + " and more words")
    model.eval()
    rm_chosen, rm_rejected, _ = training._scores([(prompt, chosen, rejected), long_pair])

    # the PPO layout: the same prompt among a longer one, the response as sampled (ending
    # at <|im_end|>, which sampling keeps once), other rows longer, all under one mask
    prompts = encode_prompts(tok, [prompt, long_pair[0]], 64)
    responses = [
        target_end(tok(t, add_special_tokens=False)["input_ids"], tok)
        for t in (chosen, long_pair[2])
    ]
    prompt_ids, prompt_mask = left_pad(prompts, tok.pad_token_id)
    response_ids, response_mask = right_pad(responses, tok.pad_token_id)
    batch = {
        Field.INPUT_IDS: torch.cat([prompt_ids, response_ids], 1),
        Field.ATTENTION_MASK: torch.cat([prompt_mask, response_mask], 1),
    }
    ppo = ModelReward(model).score(batch, [], {})
    assert ppo[0] == pytest.approx(float(rm_chosen[0]), abs=1e-5)
    assert ppo[1] == pytest.approx(float(rm_rejected[1]), abs=1e-5)

    # and that token is <|im_end|>: the score of the unpadded sequence at its last position
    alone = torch.tensor([prompts[0] + responses[0]])
    assert alone[0, -1] == tok.convert_tokens_to_ids(IM_END)
    one = sequence_scores(model, alone, torch.ones_like(alone))
    assert float(one[0]) == pytest.approx(float(rm_chosen[0]), abs=1e-5)
    assert model.config.pad_token_id is None  # the forward's stand-in pad id was undone


def test_models_load_with_the_configured_attention(chat_model_dir, caplog):
    assert load_policy(chat_model_dir).config._attn_implementation == "sdpa"  # the default
    eager = load_policy(chat_model_dir, LoadOptions(attn_implementation="eager"))
    assert eager.config._attn_implementation == "eager"
    rm = load_reward_model(chat_model_dir, options=LoadOptions("eager"))
    assert rm.config._attn_implementation == "eager"
    with caplog.at_level(logging.WARNING, logger="placerl.models.loading"):
        load_policy(chat_model_dir, LoadOptions(trust_remote_code=True))
    assert any("trust_remote_code is on" in r.getMessage() for r in caplog.records)


def test_flash_attention_without_the_package_is_a_user_error(chat_model_dir):
    try:
        import flash_attn  # noqa: F401

        pytest.skip("flash-attn is installed here")
    except ImportError:
        pass
    with pytest.raises(UserError, match="flash_attention_2") as err:
        load_policy(chat_model_dir, LoadOptions(attn_implementation="flash_attention_2"))
    assert err.value.where == "model.attn_implementation"


def test_config_fields_reach_every_stage_load(chat_model_dir, tmp_path):
    cfg = load_config(
        None,
        [
            "stage=sft",
            f"model.path={chat_model_dir}",
            f"run_dir={tmp_path}",
            "model.attn_implementation=eager",
        ],
        RunConfig,
    )
    assert LoadOptions.of(cfg.model) == LoadOptions("eager", False)
    from placerl.stages.sources import tokenizer_and_policy

    _, policy = tokenizer_and_policy(cfg)
    assert policy.config._attn_implementation == "eager"
    with pytest.raises(UserError, match="attn_implementation"):
        load_config(None, ["stage=sft", "model.attn_implementation=fast"], RunConfig)
