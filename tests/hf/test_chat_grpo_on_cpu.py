"""SFT then GRPO on the Qwen2-shaped ChatML model, chat-format data end to end: responses stop
at <|im_end|> (the generation_config end token, not the tokenizer's EOS), the reward function
gets the chat messages, and the exported policy loads with ``from_pretrained``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from placerl.cli import main
from placerl.data.collate import encode_prompts, left_pad
from placerl.models.chat_factory import ENDOFTEXT, IM_END
from placerl.models.loading import load_policy, load_tokenizer
from placerl.roles.rollout import RolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.types import Field
from tests.hf import chat_reward

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUDGET = 12  # room to run past the 5 digits + <|im_end|> a stopped response needs


def write_chat_data(root, n: int = 256, seed: int = 0):
    rng = random.Random(seed)
    digits = ["".join(rng.choice("0123456789") for _ in range(5)) for _ in range(n)]
    user = [[{"role": "user", "content": f"rev {d}="}] for d in digits]
    sft, prompts = root / "chat_sft.jsonl", root / "chat_prompts.jsonl"
    sft.write_text(
        "".join(
            json.dumps({"messages": u + [{"role": "assistant", "content": d[::-1]}]}) + "\n"
            for u, d in zip(user, digits, strict=True)
        )
    )
    prompts.write_text(
        "".join(
            json.dumps({"prompt": u, "answer": d[::-1]}) + "\n"
            for u, d in zip(user, digits, strict=True)
        )
    )
    return sft, prompts


def run_sft_then_grpo(
    model_dir, root, sft_steps: int = 100, grpo_steps: int = 3, lr: str = "1e-2"
) -> dict:
    """Returns the exported policy dir, the GRPO metrics and stop statistics of samples."""
    sft_data, prompt_data = write_chat_data(root)
    common = ["trainer.progress=false", "trainer.tensorboard=false", "data.num_eval=0"]
    assert (
        main(
            [
                "train",
                str(EXAMPLES / "sft.yaml"),
                f"model.path={model_dir}",
                f"run_dir={root / 'sft'}",
                f"data.train={sft_data}",
                "data.max_len=40",
                f"trainer.steps={sft_steps}",
                "trainer.batch_size=16",
                f"optim.lr={lr}",
                *common,
            ]
        )
        == 0
    )
    chat_reward.CALLS.clear()
    assert (
        main(
            [
                "train",
                str(EXAMPLES / "grpo.yaml"),
                f"model.path={root / 'sft' / 'policy'}",
                f"run_dir={root / 'grpo'}",
                f"data.train={prompt_data}",
                "reward.function=tests.hf.chat_reward:reversal_reward",
                f"rollout.max_new_tokens={BUDGET}",
                "rollout.samples_per_prompt=4",
                f"trainer.steps={grpo_steps}",
                "trainer.batch_size=8",
                "optim.lr=1e-4",
                *common,
            ]
        )
        == 0
    )
    policy = root / "grpo" / "policy"
    metrics = [
        json.loads(line) for line in (root / "grpo" / "metrics.jsonl").read_text().splitlines()
    ]
    return {"policy": policy, "metrics": metrics, **stop_statistics(policy, prompt_data)}


def stop_statistics(policy_dir, prompt_data, n: int = 64) -> dict:
    """Sample (temperature 1) n prompts: how responses end, one decoded with its markup."""
    tok, model = load_tokenizer(policy_dir), load_policy(policy_dir)
    rows = [json.loads(line) for line in prompt_data.read_text().splitlines()[:n]]
    texts = [
        tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]
    ids, mask = left_pad(encode_prompts(tok, texts, 64), tok.pad_token_id)
    batch = RolloutWorker(model, tok, SamplingParams(max_new_tokens=BUDGET), seed=0).generate(
        ids, mask
    )
    response, rmask = batch[Field.RESPONSE_IDS], batch[Field.RESPONSE_MASK]
    lengths = rmask.sum(-1)
    last = response.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
    im_end, eot = tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)
    in_mask = lambda t: int(((response == t) & (rmask == 1)).sum())  # noqa: E731
    decoded = tok.decode(response[0, : int(lengths[0])])
    return {
        "n": n,
        "ended_im_end": int((last == im_end).sum()),
        "ended_endoftext": int((last == eot).sum()),
        "hit_budget": int((lengths == BUDGET).sum() - (last == im_end)[lengths == BUDGET].sum()),
        "im_end_in_masks": in_mask(im_end),
        "mean_length": float(lengths.float().mean()),
        "sample": texts[0] + decoded,
        "correct": sum(
            tok.decode(response[i, : int(lengths[i])], skip_special_tokens=True).strip()
            == r["answer"]
            for i, r in enumerate(rows)
        ),
    }


@pytest.mark.slow
def test_chat_grpo_responses_stop_at_im_end(qwen_dir, tmp_path):
    out = run_sft_then_grpo(qwen_dir, tmp_path)
    assert out["ended_im_end"] >= 0.9 * out["n"]  # stopped at <|im_end|>, not run on
    assert out["im_end_in_masks"] == out["ended_im_end"]  # once per response, at its end
    assert (
        out["sample"].endswith("<|im_end|>")
        and "<|im_end|>\n" not in out["sample"].split("assistant\n")[-1]
    )
    # the reward function got the chat messages, as the dataset gave them
    prompts = chat_reward.CALLS[0]["prompts"]
    assert isinstance(prompts[0], list) and prompts[0][0]["role"] == "user"
    assert prompts[0][0]["content"].startswith("rev ")
    # the exported policy is an ordinary HF checkpoint that keeps the chat conventions
    model = AutoModelForCausalLM.from_pretrained(out["policy"])
    tok = AutoTokenizer.from_pretrained(out["policy"])
    assert tok.pad_token is None and tok.chat_template
    assert model.generation_config.eos_token_id == [
        tok.convert_tokens_to_ids(IM_END),
        tok.eos_token_id,
    ]
    assert len(out["metrics"]) >= 3
