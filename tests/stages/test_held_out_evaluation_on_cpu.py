"""Held-out evaluation that fits chat data: a loss for SFT/RM/DPO on a file of the training
format, a reward for RL prompts without answers, and samples in samples.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.trainer import train
from tests.conftest import fast_overrides

CHAT_SFT = "examples/data/chat_sft.jsonl"
PREFERENCES = "examples/data/preferences.jsonl"


def _run(tiny_model_dir, tmp_path, stage: str, *extra: str) -> tuple[dict, Path]:
    run_dir = tmp_path / stage
    overrides = fast_overrides(tiny_model_dir, run_dir, stage, steps=2)
    overrides += ["trainer.save_every=0", "trainer.log_samples=3", "data.max_len=48", *extra]
    final = train(load_config(None, overrides, RunConfig))
    return final, run_dir


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _eval_records(run_dir: Path, key: str) -> list[dict]:
    return [r for r in _jsonl(run_dir / "metrics.jsonl") if key in r]


def test_sft_held_out_loss_on_a_chat_file(tiny_model_dir, tmp_path):
    final, run_dir = _run(
        tiny_model_dir, tmp_path, "sft", f"data.train={CHAT_SFT}", f"data.eval={CHAT_SFT}"
    )
    assert math.isfinite(final["eval/loss"]) and final["eval/loss"] > 0
    assert "eval/accuracy" not in final  # no answer column: a loss, not exact match
    assert [r["step"] for r in _eval_records(run_dir, "eval/loss")] == [0, 2]
    samples = _jsonl(run_dir / "samples.jsonl")
    assert [s["step"] for s in samples] == [0, 0, 0, 2, 2, 2]
    first = samples[0]
    assert "rev 39825=" in first["prompt"] and first["completion"].startswith("39825")
    assert isinstance(first["response"], str)


def test_sft_loss_is_token_weighted_over_the_set(tiny_model_dir):
    """Not a mean of batch means: one batch or many give the same number."""
    from placerl.evaluation import sft_loss
    from placerl.models.loading import load_policy, load_tokenizer

    tokenizer, model = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    pairs = [("rev 1=", "1"), ("rev 12345=", "54321 and a much longer completion")]
    whole = sft_loss(model, tokenizer, pairs, max_len=48, batch_size=8)
    split = sft_loss(model, tokenizer, pairs, max_len=48, batch_size=1)
    each = [sft_loss(model, tokenizer, [p], max_len=48) for p in pairs]
    assert split == pytest.approx(whole, rel=1e-5)
    assert whole != pytest.approx(sum(each) / 2, rel=1e-3)  # the long completion weighs more


def test_reward_model_held_out_loss_and_scored_pairs(tiny_model_dir, tmp_path):
    final, run_dir = _run(
        tiny_model_dir, tmp_path, "rm", f"data.train={PREFERENCES}", f"data.eval={PREFERENCES}"
    )
    assert set(final) == {"eval/pairwise_accuracy", "eval/loss", "eval/margin"}
    assert 0 <= final["eval/pairwise_accuracy"] <= 1 and final["eval/loss"] > 0
    sample = _jsonl(run_dir / "samples.jsonl")[0]
    assert {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} <= set(sample)


def test_dpo_held_out_loss_and_samples_from_a_preference_file(tiny_model_dir, tmp_path):
    final, run_dir = _run(
        tiny_model_dir, tmp_path, "dpo", f"data.train={PREFERENCES}", f"data.eval={PREFERENCES}"
    )
    assert math.isfinite(final["eval/loss"]) and "eval/preference_accuracy" in final
    samples = _jsonl(run_dir / "samples.jsonl")
    assert len(samples) == 6 and {"prompt", "response", "chosen", "rejected"} <= set(samples[0])


def test_rl_held_out_reward_without_an_answer_column(tiny_model_dir, tmp_path):
    prompts = tmp_path / "chat_prompts.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"rev {d}="}]} for d in ("123", "4567")]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    final, run_dir = _run(
        tiny_model_dir,
        tmp_path,
        "grpo",
        f"data.train={prompts}",
        f"data.eval={prompts}",
        "reward.function=tests.conftest:length_reward",
    )
    assert set(final) == {"eval/reward"}
    samples = _jsonl(run_dir / "samples.jsonl")
    assert len(samples) == 4  # 2 prompts x (step 0, step 2)
    for sample in samples:  # length_reward: the reward is the response's length
        assert sample["reward"] == len(sample["response"])
        assert sample["stop"] in ("end_token", "stop_string", "length")  # issue 21.8
    records = _jsonl(run_dir / "metrics.jsonl")
    trained = [r for r in records if "response/clipped_ratio" in r]
    assert len(trained) == 2  # every training step: the share of responses cut at the budget
    for r in trained:
        assert 0.0 <= r["response/clipped_ratio"] <= 1.0
        shares = r["response/clipped_ratio"] + r["response/end_token_ratio"]
        assert shares + r["response/stop_string_ratio"] == pytest.approx(1.0)
