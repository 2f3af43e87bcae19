"""What a batch of finished episodes did, as metrics and as ``samples.jsonl`` records: pure
functions of the episodes, so any runtime can compute them where the episodes are.

Metrics (``env/…``): turns per episode, tool calls per turn, tokens by source per episode,
tool latency (mean, max) and environment step time, the environment's reward (mean over the
episodes it rewarded, and the share it rewarded), failure counts — ``tool_errors`` (a tool
raised or returned non-text), ``timeouts`` (tool calls and steps past their timeout),
``bad_calls`` (malformed, unknown tool, wrong arguments, too many) — and the share of
episodes ending each way (``env/end/done``, ``…/max_turns``, ``…/max_tokens``, …).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from placerl.rollout.episodes.record import EndReason, Episode, Source
from placerl.rollout.tools.execution import Status, ToolOutcome


def _calls(episodes: Sequence[Episode]) -> list[ToolOutcome]:
    return [c for e in episodes for t in e.turns if t.step for c in t.step.tool_calls]


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    n = max(len(episodes), 1)
    turns = [t for e in episodes for t in e.turns]
    calls = _calls(episodes)
    ran = [c.seconds for c in calls if c.status is not Status.BAD_CALL]
    steps = [t.step_seconds for t in turns if t.step is not None]
    rewards = [e.reward for e in episodes if e.reward is not None]
    status = [c.status for c in calls]
    metrics = {
        "env/turns": len(turns) / n,
        "env/tool_calls_per_turn": len(calls) / max(len(turns), 1),
        "env/tokens_model": sum(e.tokens(Source.MODEL) for e in episodes) / n,
        "env/tokens_observation": sum(e.tokens(Source.OBSERVATION) for e in episodes) / n,
        "env/tool_latency_s": sum(ran) / len(ran) if ran else 0.0,
        "env/tool_latency_max_s": max(ran, default=0.0),
        "env/step_s": sum(steps) / len(steps) if steps else 0.0,
        "env/reward": sum(rewards) / len(rewards) if rewards else 0.0,
        "env/rewarded": len(rewards) / n,
        "env/tool_errors": float(status.count(Status.ERROR)),
        "env/timeouts": float(
            status.count(Status.TIMEOUT) + sum(e.end is EndReason.STEP_TIMEOUT for e in episodes)
        ),
        "env/bad_calls": float(status.count(Status.BAD_CALL)),
    }
    for reason in EndReason:
        metrics[f"env/end/{reason.value}"] = sum(e.end is reason for e in episodes) / n
    return metrics


def sample_record(episode: Episode) -> dict[str, Any]:
    """One line of ``samples.jsonl``: the whole conversation, each turn with its tool calls
    and their results, the reward and how the episode ended."""
    return {
        "row": _json_safe(dict(episode.row)),
        "messages": _json_safe(episode.messages),
        "turns": [
            {
                "text": turn.text,
                "tokens": turn.tokens,
                "tool_calls": [_call_record(c) for c in turn.step.tool_calls] if turn.step else [],
                "reward": turn.step.reward if turn.step else None,
                "step_seconds": round(turn.step_seconds, 6),
            }
            for turn in episode.turns
        ],
        "reward": episode.reward,
        "end": episode.end.value if episode.end else None,
        "tokens": {
            "prompt": len(episode.prompt_ids),
            "model": episode.tokens(Source.MODEL),
            "observation": episode.tokens(Source.OBSERVATION),
        },
    }


def _call_record(call: ToolOutcome) -> dict[str, Any]:
    return {
        "name": call.name,
        "arguments": _json_safe(call.arguments),
        "status": call.status.value,
        "content": call.content,
        "seconds": round(call.seconds, 6),
    }


def _json_safe(value: Any) -> Any:
    """``value`` if JSON can write it, else with every unwritable leaf as its ``repr``."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=repr))
