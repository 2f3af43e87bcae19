"""Episodes sampled by placerl's own sampler on a tiny Llama: the trainer's recomputed
log-probs over the episode batch (interior observation tokens and all) are the sampler's,
continuing from the kept KV cache gives the episodes recomputing would, and an episode does
not depend on how the tools' timing grouped the sampling calls."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from placerl.algos import core
from placerl.algos.kl import token_rewards_from_scores
from placerl.models.loading import LoadOptions, load_tokenizer
from placerl.roles.common import response_log_probs
from placerl.rollout.envs import EpisodeLimits, StepResult
from placerl.rollout.episodes.batch import episodes_to_batch
from placerl.rollout.episodes.engines import PlacerlTurns
from placerl.rollout.episodes.record import Source
from placerl.rollout.episodes.runner import draw_uniforms, run_episodes
from placerl.rollout.sampling import SamplingParams
from placerl.tasks.tool_arithmetic import TOOL_CHAT_TEMPLATE
from placerl.types import Field

LIMITS = EpisodeLimits(max_turns=4, max_tokens=48)  # + the prompt: within 64 positions
ROWS = [{"prompt": p} for p in ("12+34=", "rev 123=", "5*6=", "7+8=", "999+1=", "rev 9=")]


class Echo:
    """Answers every turn with a tool message until the fourth; waits ``delay(row)`` seconds."""

    tool_schemas = ()

    def __init__(self, delay=lambda row: 0.0):
        self.delay, self.turns, self.row = delay, 0, None

    def reset(self, row):
        self.row, self.turns = row, 0
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, assistant):
        self.turns += 1
        time.sleep(self.delay(self.row))
        if self.turns == 4:
            return StepResult(reward=1.0, done=True)
        return StepResult(observation=({"role": "tool", "content": str(self.turns)},))


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, LoadOptions())
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, tokenizer


def episodes(setup, reuse_cache=True, delay=lambda row: 0.0, gather_s=0.005):
    model, tokenizer = setup
    ends = list(range(4, len(tokenizer), 3))  # a third of the vocabulary ends a turn
    params = SamplingParams(max_new_tokens=6)
    sampler = PlacerlTurns(model, params, ends, tokenizer.pad_token_id, reuse_cache=reuse_cache)
    uniforms = draw_uniforms(len(ROWS), LIMITS, 6, torch.Generator().manual_seed(0))
    return run_episodes(
        sampler,
        lambda limits: Echo(delay),
        ROWS,
        tokenizer,
        LIMITS,
        max_new_tokens=6,
        uniforms=uniforms,
        gather_s=gather_s,
    )


def test_episodes_have_several_turns_with_observations_between(setup):
    out = episodes(setup)
    assert max(len(e.turns) for e in out) >= 3
    assert any(s.source is Source.OBSERVATION for e in out for s in e.segments)


def test_the_trainer_recomputes_the_samplers_log_probs_on_model_tokens(setup):
    model, tokenizer = setup
    batch = episodes_to_batch(episodes(setup), tokenizer.pad_token_id)
    mask = batch[Field.RESPONSE_MASK].bool()
    with torch.no_grad():
        recomputed, _ = response_log_probs(model, batch)
    torch.testing.assert_close(
        recomputed[mask], batch[Field.OLD_LOG_PROBS][mask], atol=2e-5, rtol=1e-5
    )


def test_continuing_from_the_kept_cache_equals_recomputing_the_prefix(setup):
    for a, b in zip(episodes(setup, reuse_cache=True), episodes(setup, reuse_cache=False)):
        assert a.response_ids == b.response_ids and a.sources == b.sources
        torch.testing.assert_close(torch.tensor(a.log_probs), torch.tensor(b.log_probs))


def test_an_episode_does_not_depend_on_how_tool_timing_grouped_the_calls(setup):
    together = episodes(setup, gather_s=1.0)
    staggered = episodes(setup, delay=lambda row: 0.02 * (len(row["prompt"]) % 3), gather_s=0.0)
    for a, b in zip(together, staggered):
        assert a.response_ids == b.response_ids
        torch.testing.assert_close(torch.tensor(a.log_probs), torch.tensor(b.log_probs))


def test_gae_skips_observation_tokens(setup):
    """Values and rewards on an episode batch: the advantage of a model token looks through
    the observation tokens after it to the next model token (core.compute_gae's skip)."""
    _, tokenizer = setup
    batch = episodes_to_batch(episodes(setup), tokenizer.pad_token_id)
    mask = batch[Field.RESPONSE_MASK]
    scores = torch.arange(1.0, mask.shape[0] + 1)
    rewards = token_rewards_from_scores(scores, mask, None, 0.0)
    values = torch.zeros(mask.shape)
    advantages, _ = core.compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    expected = scores[:, None].expand(mask.shape) * mask
    torch.testing.assert_close(advantages, expected)
