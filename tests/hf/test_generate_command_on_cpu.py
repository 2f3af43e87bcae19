"""``placerl generate`` on a Qwen2-shaped chat model: the prompt is the chat template's
rendering with the generation prompt, and the answer is what ``model.generate`` (greedy, the
generation config's list of end tokens) answers, ended at the first end token."""

from __future__ import annotations

import torch

from placerl.commands.policy_session import Options, PolicySession
from placerl.models.loading import load_tokenizer


def test_generate_answers_as_model_generate_with_the_chat_template(qwen_dir):
    session = PolicySession(qwen_dir, Options(max_new_tokens=12, system="Be brief."))
    tok = load_tokenizer(qwen_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert session.render("hi") == text and session.chat
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        out = session.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    expected = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert session.reply("hi") == expected
    ends = set(session.end_ids)
    assert {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id} <= ends
