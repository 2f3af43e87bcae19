"""Why multi-turn episodes stopped (issue 21.8): each episode's last model turn — cut at its
token limit, ended on an end token, or at a stop string — as ``Field.STOP_REASON``, so
``response/clipped_ratio`` and ``samples.jsonl``'s ``stop`` cover episodes too."""

from __future__ import annotations

import random

import pytest

from placerl.algos.online import experience_metrics
from placerl.models.loading import LoadOptions, load_tokenizer
from placerl.rollout.envs import EpisodeLimits
from placerl.rollout.episodes.batch import episode_stop_reasons, episodes_to_batch
from placerl.rollout.episodes.record import EndReason, Episode, Segment, Source, Turn
from placerl.rollout.episodes.runner import run_episodes
from placerl.rollout.stop_reasons import END_TOKEN, LENGTH, STOP_STRING
from placerl.tasks.tool_arithmetic import TOOL_CHAT_TEMPLATE, ToolArithmeticTask, make_env
from placerl.types import Field
from tests.rollout.scripted import ScriptedTurns, calculator_oracle


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir, LoadOptions())
    tok.chat_template = TOOL_CHAT_TEMPLATE
    return tok


@pytest.mark.parametrize("seed", range(6))
def test_a_turn_cut_at_its_limit_is_length_and_one_that_ended_is_end_token(tokenizer, seed):
    rng = random.Random(seed)
    max_new = rng.choice([3, 6, 64])  # 3 and 6 cut the calculator's call or answer
    rows = ToolArithmeticTask().prompt_rows(rng.randint(2, 6), seed=seed)
    sampler = ScriptedTurns(tokenizer, calculator_oracle, tokenizer.eos_token_id)
    limits = EpisodeLimits(max_tokens=rng.choice([12, 400]))
    episodes = run_episodes(sampler, make_env, rows, tokenizer, limits, max_new_tokens=max_new)
    reasons = episode_stop_reasons(episodes, [tokenizer.eos_token_id]).tolist()
    for episode, reason in zip(episodes, reasons, strict=True):
        last = [s for s in episode.segments if s.source is Source.MODEL][-1]
        cut = last.ids[-1] != tokenizer.eos_token_id  # the script always ends on the end token
        assert reason == (LENGTH if cut else END_TOKEN)
        if episode.end is EndReason.TRUNCATED:
            assert reason == LENGTH
    batch = episodes_to_batch(episodes, tokenizer.pad_token_id)
    batch[Field.STOP_REASON] = episode_stop_reasons(episodes, [tokenizer.eos_token_id])
    batch[Field.SCORES] = batch[Field.OLD_LOG_PROBS].sum(-1)
    metrics = experience_metrics(batch)
    assert metrics["response/clipped_ratio"] == pytest.approx(reasons.count(LENGTH) / len(rows))
    assert metrics["response/end_token_ratio"] == pytest.approx(
        reasons.count(END_TOKEN) / len(rows)
    )


def test_a_turn_that_ended_on_no_end_token_stopped_at_a_stop_string():
    turn = Turn("Answer: 4", 3, None, ended=True)
    episode = Episode({}, [], (1, 2), [Segment(Source.MODEL, (5, 6, 7), (0.0,) * 3)], [turn])
    assert episode_stop_reasons([episode], [2]).tolist() == [STOP_STRING]
    cut = Episode(
        {}, [], (1,), [Segment(Source.MODEL, (5,), (0.0,))], [Turn("x", 1, None, 0, False)]
    )
    assert episode_stop_reasons([cut], [2]).tolist() == [LENGTH]
