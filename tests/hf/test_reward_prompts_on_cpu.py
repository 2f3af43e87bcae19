"""A reward function gets the prompts as the dataset gave them (TRL's convention): the list of
chat messages for chat data, the string for plain data — through the real scoring phase."""

from __future__ import annotations

import json

import pytest

from placerl.algos.online import Roles, score
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.models.device import CPU
from placerl.models.loading import load_policy, load_tokenizer
from placerl.roles.reward import RuleReward
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.runtime.local import on_device
from placerl.stages.sources import prompt_set
from placerl.timing import PhaseTimer

CHAT = [
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "answer": "a",
    },
    {"prompt": [{"role": "user", "content": "rev 123="}], "answer": "321"},
]
PLAIN = [{"prompt": "rev 123=", "answer": "321"}, {"prompt": "rev 45=", "answer": "54"}]


@pytest.mark.parametrize("rows", [CHAT, PLAIN], ids=["chat", "plain"])
def test_reward_function_gets_prompts_as_given(rows, chat_model_dir, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = ["stage=sft", f"model.path={chat_model_dir}", f"run_dir={tmp_path}"]
    cfg = load_config(None, overrides, RunConfig)
    tok, model = load_tokenizer(chat_model_dir), load_policy(chat_model_dir)
    prompts = prompt_set(cfg, tok, str(data), "train").batch([0, 1], tok.pad_token_id, repeat=2)
    seen = {}

    def reward(completions, prompts, answer, **_):
        seen.update(prompts=prompts, answer=answer)
        return [0.0] * len(completions)

    roles = Roles(
        rollout=RolloutWorker(model, tok, SamplingParams(max_new_tokens=2)),
        actor=None,
        reward=on_device(RuleReward(reward, tok, "test reward"), CPU),
    )
    batch = roles.rollout.generate(prompts.ids, prompts.mask)
    score(roles, batch, prompts, PhaseTimer())
    expected = [r["prompt"] for r in rows for _ in range(2)]  # groups: each prompt twice
    assert seen["prompts"] == expected and seen["answer"] == [
        r["answer"] for r in rows for _ in range(2)
    ]
    if rows is CHAT:  # the model still saw the rendered template
        assert prompts.texts[0].startswith("<|im_start|>system\nBe brief.<|im_end|>")
