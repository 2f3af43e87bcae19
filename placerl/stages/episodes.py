"""Held-out evaluation of a run with episodes (``env:``): greedy episodes on the eval prompts.

The same environment and limits as training, the policy answering greedily turn by turn:
``eval/accuracy`` is exact match of each episode's final answer against the ``answer`` column,
``eval/reward`` the run's episode reward (scaled like training's), ``eval/turns`` and
``eval/tool_calls_per_turn`` how the model used its tools. The first ``trainer.log_samples``
episodes go to ``samples.jsonl`` as whole conversations (``episodes.metrics.sample_record``:
every turn with its tool calls and results), with a one-line transcript for the console.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from placerl.config.preflight import positions
from placerl.config.schema import RunConfig
from placerl.data.stream import PromptSet
from placerl.evaluation import Evaluation
from placerl.models.tokens import end_token_ids
from placerl.roles.reward import final_answer
from placerl.rollout.episodes.batch import episode_stop_reasons, episodes_to_batch
from placerl.rollout.episodes.engines import PlacerlTurns
from placerl.rollout.episodes.metrics import episode_metrics, sample_record
from placerl.rollout.episodes.record import Episode
from placerl.rollout.episodes.sampling import EpisodeSetup, episode_rows, run_setup
from placerl.rollout.sampling import SamplingParams
from placerl.rollout.stop_reasons import reason_names

CHUNK = 256  # episodes sampled together


@torch.no_grad()
def evaluate_episodes(
    cfg: RunConfig, policy, tokenizer, prompts: PromptSet, setup: EpisodeSetup, reward
) -> Evaluation:
    """Greedy episodes of ``policy`` (where it lives) on every held-out prompt (module doc);
    ``reward`` is the run's reward role, used when a reward model scores the tokens."""
    params = SamplingParams(
        max_new_tokens=cfg.rollout.max_new_tokens,
        greedy=True,
        stop_strings=tuple(cfg.rollout.stop_strings),
        precision=cfg.model.precision,
    )
    ends = end_token_ids(tokenizer, policy)
    turns = PlacerlTurns(policy, params, ends, tokenizer.pad_token_id, tokenizer)
    context = positions(policy.config.to_dict())
    was_training = policy.training
    policy.eval()
    episodes: list[Episode] = []
    scores: list[float] = []
    try:
        for start in range(0, len(prompts), CHUNK):
            rows = list(range(start, min(start + CHUNK, len(prompts))))
            chunk = prompts.batch(rows, tokenizer.pad_token_id)
            done = run_setup(turns, setup, episode_rows(chunk), tokenizer, None, context)
            scores += _scores(done, setup, reward, chunk, tokenizer, cfg.reward.scale)
            episodes += done
    finally:
        policy.train(was_training)
    stops = reason_names(episode_stop_reasons(episodes, ends)) if episodes else []
    return _evaluation(episodes, scores, cfg.trainer.log_samples, stops)


def _scores(episodes, setup: EpisodeSetup, reward, chunk, tokenizer, scale: float) -> list[float]:
    if setup.score is not None:
        return [scale * float(s) for s in setup.score(episodes)]
    batch = episodes_to_batch(episodes, tokenizer.pad_token_id)
    return reward.score(batch, chunk.as_given(), chunk.columns).float().tolist()


def _evaluation(
    episodes: Sequence[Episode], scores: list[float], num_samples: int, stops: Sequence[str]
) -> Evaluation:
    answers = [e.row.get("answer") for e in episodes]
    correct = [
        float(a is not None and final_answer(e.messages).strip() == str(a).strip())
        for e, a in zip(episodes, answers, strict=True)
    ]
    n = max(len(episodes), 1)
    env = episode_metrics(episodes)
    metrics = {
        "eval/reward": sum(scores) / n,
        "eval/turns": env["env/turns"],
        "eval/tool_calls_per_turn": env["env/tool_calls_per_turn"],
    }
    if any(a is not None for a in answers):
        metrics["eval/accuracy"] = sum(correct) / n
    samples = []
    rows = list(zip(episodes, correct, scores, stops, strict=True))[:num_samples]
    for episode, ok, score, stop in rows:
        record = sample_record(episode)
        sample = {"prompt": _text(episode.row.get("prompt")), "response": transcript(episode)}
        sample["stop"] = stop  # why the last model turn stopped
        if episode.row.get("answer") is not None:
            sample |= {"answer": episode.row["answer"], "correct": ok}
        samples.append(sample | {"reward": score, "conversation": record})
    return Evaluation(metrics, samples)


def transcript(episode: Episode) -> str:
    """The conversation after the prompt on one line: model turns, tool results in [ ]."""
    roles = [m["role"] for m in episode.messages]
    start = roles.index("assistant") if "assistant" in roles else len(roles)
    parts = []
    for message in episode.messages[start:]:
        if message["role"] == "assistant":
            parts.append(str(message["content"]))
        else:
            parts.append(f"[{message.get('name') or message['role']}: {message['content']}]")
    return " → ".join(parts)


def _text(prompt) -> str:
    if isinstance(prompt, list):  # chat messages: the last user turn
        return str(prompt[-1].get("content", "")) if prompt else ""
    return str(prompt)
