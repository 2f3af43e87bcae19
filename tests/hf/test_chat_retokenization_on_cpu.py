"""Token-exact multi-turn on the Qwen2-shaped chat model (Qwen2.5's tool template): observation
tokens appended alone are exactly what the template writes, and re-rendering the finished
conversation and tokenising it whole would change the ids the model sampled — where and how
is printed (``pytest -s``) and checked."""

from __future__ import annotations

import collections
import random

import pytest
import torch

from placerl.models.chat_factory import IM_END, make_chat_model_dir
from placerl.models.factory import TinyLlamaSize
from placerl.models.loading import load_policy, load_tokenizer
from placerl.roles.common import response_log_probs
from placerl.rollout.envs import EpisodeLimits, StepResult, tool_env_factory
from placerl.rollout.episodes import PlacerlTurns, Source, episodes_to_batch, run_episodes
from placerl.rollout.episodes.bridge import ChatBridge
from placerl.rollout.episodes.retokenize import differences, rerendered_ids, structured
from placerl.rollout.episodes.runner import draw_uniforms
from placerl.rollout.sampling import SamplingParams
from placerl.tasks.tool_arithmetic import calc, final_answer_reward
from placerl.types import Field
from tests.conftest import TINY
from tests.hf.conftest import VOCAB
from tests.rollout.scripted import ScriptedTurns

ROW = {"prompt": "12*34=", "answer": "408"}
TEMPLATE_CALL = '<tool_call>\n{"name": "calc", "arguments": {"expr": "12*34"}}\n</tool_call>'
COMPACT_CALL = '<tool_call>{"name":"calc","arguments":{"expr":"12*34"}}</tool_call>'


@pytest.fixture(scope="module")
def qwen_tools(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen_tools") / "qwen2"
    size = TinyLlamaSize(**{**TINY, "max_position_embeddings": 512})
    make_chat_model_dir(path, "qwen2", VOCAB, size=size, seed=0, tools=True)
    return load_tokenizer(path), load_policy(path)


def solve(call: str):
    """A scripted policy: the call as given, then the tool's result as the answer."""

    def policy(text: str) -> str:
        return "408" if "<tool_response>" in text else call

    return policy


def episode_of(tokenizer, policy, rows=(ROW,), factory=None, **limits):
    factory = factory or tool_env_factory([calc], reward=final_answer_reward)
    sampler = ScriptedTurns(tokenizer, policy, tokenizer.convert_tokens_to_ids(IM_END))
    limits = EpisodeLimits(**{"max_tokens": 400, **limits})
    return run_episodes(sampler, factory, list(rows), tokenizer, limits, max_new_tokens=200)


def report(title, tokenizer, diffs):
    print(f"\n{title}: {len(diffs)} differing span(s)")
    for d in diffs:
        print("   ", d.describe(tokenizer))


def tools_of(tokenizer):
    return tool_env_factory([calc])(EpisodeLimits()).tool_schemas


def test_bridged_ids_equal_the_whole_render_when_the_model_writes_as_the_template(qwen_tools):
    """Positive control: a model that writes the template's own serialisation, tokenised as
    the tokenizer would, gets exactly the ids a whole render gives, but for the newline the
    template writes after the final <|im_end|> (sampling stops at the end token)."""
    tokenizer, _ = qwen_tools
    (episode,) = episode_of(tokenizer, solve(TEMPLATE_CALL))
    assert episode.reward == 1.0
    theirs = rerendered_ids(tokenizer, structured(episode.messages), tools_of(tokenizer))
    diffs = differences(episode, theirs, tokenizer)
    report("template-formatted call", tokenizer, diffs)
    (only,) = diffs
    assert only.ours == () and tokenizer.decode(list(only.theirs)) == "\n"
    assert only.start == len(episode.prompt_ids) + len(episode.response_ids)


def test_observation_tokens_are_the_templates_text_after_the_end_token(qwen_tools):
    tokenizer, _ = qwen_tools
    (episode,) = episode_of(tokenizer, solve(TEMPLATE_CALL))
    bridge = [s for s in episode.segments if s.source is Source.OBSERVATION][0]
    text = "\n<|im_start|>user\n<tool_response>\n408\n</tool_response><|im_end|>\n"
    assert tokenizer.decode(list(bridge.ids)) == text + "<|im_start|>assistant\n"
    assert list(bridge.ids) == tokenizer(text + "<|im_start|>assistant\n")["input_ids"]


def test_rerendering_parsed_tool_calls_rewrites_the_models_own_tokens(qwen_tools):
    """The model wrote compact JSON; a trainer that re-renders the parsed call (TRL, veRL)
    trains on the template's spacing instead. Our ids keep what was sampled; re-rendering the
    text as the model wrote it differs only at the end."""
    tokenizer, _ = qwen_tools
    (episode,) = episode_of(tokenizer, solve(COMPACT_CALL))
    assert episode.reward == 1.0
    tools = tools_of(tokenizer)
    diffs = differences(
        episode, rerendered_ids(tokenizer, structured(episode.messages), tools), tokenizer
    )
    report("compact call, re-rendered from parsed tool_calls", tokenizer, diffs)
    assert any("model" in d.sources and d.kind == "text differs" for d in diffs)
    as_written = differences(episode, rerendered_ids(tokenizer, episode.messages, tools), tokenizer)
    report("compact call, re-rendered as written", tokenizer, as_written)
    assert len(as_written) == 1 and as_written[0].sources == ("end",)


def test_a_sampled_split_that_is_not_the_tokenizers_is_lost_by_retokenising(qwen_tools):
    tokenizer, _ = qwen_tools
    word = "The answer is 408"
    canonical = tokenizer(word, add_special_tokens=False)["input_ids"]
    pieces = [i for ch in word for i in tokenizer(ch, add_special_tokens=False)["input_ids"]]
    assert pieces != canonical  # the BPE merges some of these characters

    def policy(text):
        return pieces if "<tool_response>" in text else TEMPLATE_CALL

    (episode,) = episode_of(tokenizer, policy)
    diffs = differences(
        episode,
        rerendered_ids(tokenizer, structured(episode.messages), tools_of(tokenizer)),
        tokenizer,
    )
    report("answer sampled character by character", tokenizer, diffs)
    assert any(d.kind == "same text, other ids" and "model" in d.sources for d in diffs)


class Echo:
    """No tools: a user reply after every turn, three turns."""

    tool_schemas = ()

    def __init__(self):
        self.turns = 0

    def reset(self, row):
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, assistant):
        self.turns += 1
        if self.turns == 3:
            return StepResult(reward=0.0, done=True)
        return StepResult(observation=({"role": "user", "content": f"go on {self.turns}"},))


def test_random_samples_of_the_vocabulary_rarely_survive_retokenising(qwen_tools):
    """Turns of random tokens from the tokenizer's own vocabulary, as a sampling model
    produces them: every episode keeps exactly the sampled ids and the bridges; re-rendering
    changes most episodes (tallied by kind)."""
    tokenizer, _ = qwen_tools
    rng = random.Random(0)
    special = set(tokenizer.all_special_ids)
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    sampled: dict[str, list[list[int]]] = collections.defaultdict(list)

    def policy(text):
        ids = [rng.choice(vocab) for _ in range(rng.randint(1, 12))]
        sampled[text.split("question ")[1].split("<")[0]].append(ids)
        return ids

    rows = [{"prompt": f"question {i}"} for i in range(40)]
    episodes = episode_of(tokenizer, policy, rows, factory=lambda limits: Echo(), max_turns=3)
    kinds: collections.Counter = collections.Counter()
    changed = 0
    for row, episode in zip(rows, episodes):
        model_segments = [s.ids for s in episode.segments if s.source is Source.MODEL]
        turns = sampled[row["prompt"].split("question ")[1]]
        assert len(model_segments) == len(turns) == 3
        for ids, drawn in zip(model_segments, turns):  # exactly what the sampler returned
            assert list(ids) == [*drawn, tokenizer.convert_tokens_to_ids(IM_END)]
        diffs = differences(episode, rerendered_ids(tokenizer, episode.messages, None), tokenizer)
        inner = [d for d in diffs if d.sources != ("end",)]  # not the final newline
        changed += bool(inner)
        kinds.update(d.kind for d in inner)
    print(
        f"\nrandom vocabulary samples: {changed}/{len(episodes)} episodes re-tokenise "
        f"differently; spans by kind: {dict(kinds)}"
    )
    assert changed > len(episodes) // 2


def test_the_sampler_on_the_qwen2_model_continues_turns_exactly(qwen_tools):
    """placerl's sampler on the Qwen2-shaped model (tied embeddings, GQA, list of end ids)
    through three turns: the trainer's forward over the episode batch, observations inside,
    recomputes the sampler's log-probs; what a whole re-render would change is tallied. The
    random model's unused embedding rows are zeroed and top-k keeps sampling among the
    tokenizer's tokens (their logits beat the zeros), as a trained model's would; turns end on
    stop strings, so each bridge begins with the template's whole closing."""
    tokenizer, model = qwen_tools
    model = model.eval()
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[len(tokenizer) :] = 0
    params = SamplingParams(max_new_tokens=16, top_k=64, stop_strings=("e", "a", "o"))
    ends = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    sampler = PlacerlTurns(model, params, ends, tokenizer.pad_token_id, tokenizer)
    rows = [{"prompt": f"question {i}"} for i in range(8)]
    limits = EpisodeLimits(max_turns=3, max_tokens=200)
    uniforms = draw_uniforms(len(rows), limits, 16, torch.Generator().manual_seed(0))
    episodes = run_episodes(
        sampler, lambda lim: Echo(), rows, tokenizer, limits, max_new_tokens=16, uniforms=uniforms
    )
    assert max(len(e.turns) for e in episodes) == 3
    batch = episodes_to_batch(episodes, tokenizer.pad_token_id)
    mask = batch[Field.RESPONSE_MASK].bool()
    with torch.no_grad():
        recomputed, _ = response_log_probs(model, batch)
    torch.testing.assert_close(
        recomputed[mask], batch[Field.OLD_LOG_PROBS][mask], atol=1e-4, rtol=1e-4
    )
    kinds: collections.Counter = collections.Counter()
    changed = 0
    for episode in episodes:
        diffs = differences(episode, rerendered_ids(tokenizer, episode.messages, None), tokenizer)
        inner = [d for d in diffs if d.sources != ("end",)]
        changed += bool(inner)
        kinds.update(d.kind for d in inner)
    print(
        f"\nplacerl sampler on the Qwen2 model: turns {[len(e.turns) for e in episodes]}; "
        f"{changed}/{len(episodes)} episodes re-tokenise differently; spans: {dict(kinds)}"
    )
    bridges = [s for e in episodes for s in e.segments if s.source is Source.OBSERVATION]
    bridge = ChatBridge(tokenizer)
    for s in bridges:  # each bridge is the template's text after a turn, tokenised alone
        text = tokenizer.decode(list(s.ids))
        assert list(s.ids) == tokenizer(text, add_special_tokens=False)["input_ids"]
        assert text.endswith("<|im_end|>\n<|im_start|>assistant\n") and bridge.close in text
