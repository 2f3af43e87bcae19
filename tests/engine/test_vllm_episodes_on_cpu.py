"""Episodes on the vLLM engine (issue 24): one request per episode per turn, the whole token
ids sent each turn. Greedy episodes equal placerl's sampler's, the engine's log-probs are the
trainer's on model tokens (observation tokens as context), and GRPO trains on episodes with
``rollout.engine: vllm`` with no engine/trainer mismatch beyond rounding."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("vllm")

from transformers import AutoModelForCausalLM  # noqa: E402

from placerl.config import load_config  # noqa: E402
from placerl.config.schema import RunConfig  # noqa: E402
from placerl.models.factory import TinyLlamaSize, make_model_dir  # noqa: E402
from placerl.models.loading import load_tokenizer  # noqa: E402
from placerl.roles.build import engine_end_ids  # noqa: E402
from placerl.rollout.episodes.engines import PlacerlTurns, VLLMTurns  # noqa: E402
from placerl.rollout.episodes.runner import draw_uniforms  # noqa: E402
from placerl.rollout.sampling import SamplingParams  # noqa: E402
from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402
from placerl.trainer import train  # noqa: E402
from tests.conftest import fast_overrides  # noqa: E402
from tests.engine.episode_checks import LIMITS, episodes, log_prob_gap  # noqa: E402

SIZE = TinyLlamaSize(  # vLLM's CPU attention wants head_dim >= 32
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    max_position_embeddings=128,
)
STOPS = ("E", "e", "i", "a", "o", "-", "s", "t", "n")  # end a random model's turns


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("vllm") / "m", builtin_corpus(), SIZE, seed=0)


def test_vllm_episodes_are_token_exact_and_equal_placerls_when_greedy(model_dir):
    tokenizer = load_tokenizer(model_dir)
    end_ids = engine_end_ids(model_dir, tokenizer)
    engine = VLLMEngine(
        model_dir,
        EngineOptions(max_model_len=128, seed=0),
        end_token_ids=end_ids,
        pad_token_id=tokenizer.pad_token_id,
        tokenizer=tokenizer,
    )
    try:  # closed here, not by vLLM's finaliser at exit (its log stream is closed by then)
        _greedy_and_seeded_episodes(engine, model_dir, tokenizer, end_ids)
    finally:
        engine.close()


def _greedy_and_seeded_episodes(engine, model_dir, tokenizer, end_ids):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    greedy = SamplingParams(max_new_tokens=8, greedy=True, stop_strings=STOPS)
    theirs = episodes(VLLMTurns(engine, greedy), tokenizer)
    ours = episodes(
        PlacerlTurns(model, greedy, end_ids, tokenizer.pad_token_id, tokenizer), tokenizer
    )
    assert any(len(e.turns) > 1 for e in theirs), "scenario: multi-turn episodes"
    assert [e.response_ids for e in theirs] == [e.response_ids for e in ours]
    assert [e.sources for e in theirs] == [e.sources for e in ours]
    assert log_prob_gap(model, theirs, tokenizer.pad_token_id) < 1e-4

    sampled = SamplingParams(max_new_tokens=8, stop_strings=STOPS)
    noise = draw_uniforms(4, LIMITS, 8, torch.Generator().manual_seed(0))
    first = episodes(VLLMTurns(engine, sampled), tokenizer, uniforms=noise)
    again = episodes(VLLMTurns(engine, sampled), tokenizer, uniforms=noise)
    assert [e.response_ids for e in first] == [e.response_ids for e in again], "seeded"
    assert log_prob_gap(model, first, tokenizer.pad_token_id) < 1e-4


def test_grpo_on_episodes_with_the_vllm_engine(model_dir, tmp_path):
    overrides = fast_overrides(model_dir, tmp_path / "run", "grpo", steps=2) + [
        "rollout.engine=vllm",
        "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=8",
        f"rollout.stop_strings={json.dumps(list(STOPS))}",
        "env.factory=tests.episodes.envs:echo_env",
        "env.max_tokens=64",
        "grpo.skip_uninformative=false",
        "trainer.save_every=0",
        "data.num_eval=4",
    ]
    train(load_config(None, overrides, RunConfig))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [r for r in rows if r.get("step", 0) >= 1 and "env/turns" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["env/turns"] > 1 and r["env/tokens_observation"] > 0
        assert r["actor/is_log_ratio_abs_mean"] < 1e-4  # fp32 engine vs fp32 trainer
        assert r["actor/grad_norm"] > 0
    assert "eval/turns" in rows[-1]
