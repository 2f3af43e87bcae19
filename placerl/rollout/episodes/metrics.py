"""What a batch of finished episodes did, as metrics and as ``samples.jsonl`` records: pure
functions of the episodes, so any runtime can compute them where the episodes are.

Metrics (``env/…``): turns per episode, tool calls per turn, tokens by source per episode,
tool latency (mean, max) and environment step time, the environment's reward (mean over the
episodes it rewarded, and the share it rewarded), failure counts — ``tool_errors`` (a tool
raised or returned non-text), ``timeouts`` (tool calls and steps past their timeout),
``bad_calls`` (malformed, unknown tool, wrong arguments, too many) — and the share of
episodes ending each way (``env/end/done``, ``…/max_turns``, ``…/max_tokens``, …).

They are computed in two halves so that they can travel with a training batch: each
episode's counts (``episode_stats``) become 1-D fields of the batch (``STAT_FIELDS``, one
number per row: they survive splitting over workers, gathering, padding and checkpoints like
any per-row field), and ``stats_metrics`` turns the rows of a batch into the metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from placerl.rollout.episodes.record import EndReason, Episode, Source
from placerl.rollout.tools.execution import Status, ToolOutcome

STATS = (
    "turns",
    "tool_calls",
    "tokens_model",
    "tokens_observation",
    "tool_seconds",  # summed over the calls that ran
    "tool_ran",  # calls that ran (not refused as bad calls)
    "tool_seconds_max",
    "step_seconds",  # summed over the environment's steps
    "steps",
    "env_reward",  # NaN: the environment gave none
    "tool_errors",
    "timeouts",
    "bad_calls",
    "end",  # the index of its EndReason
)
STAT_FIELDS = tuple(f"episode_{name}" for name in STATS)  # the batch's per-row fields
_ENDS = list(EndReason)


def _calls(episode: Episode) -> list[ToolOutcome]:
    return [c for t in episode.turns if t.step for c in t.step.tool_calls]


def episode_stats(episode: Episode) -> dict[str, float]:
    """One episode's counts, by ``STATS`` name."""
    calls = _calls(episode)
    ran = [c.seconds for c in calls if c.status is not Status.BAD_CALL]
    status = [c.status for c in calls]
    steps = [t.step_seconds for t in episode.turns if t.step is not None]
    reward = episode.reward
    return {
        "turns": len(episode.turns),
        "tool_calls": len(calls),
        "tokens_model": episode.tokens(Source.MODEL),
        "tokens_observation": episode.tokens(Source.OBSERVATION),
        "tool_seconds": sum(ran),
        "tool_ran": len(ran),
        "tool_seconds_max": max(ran, default=0.0),
        "step_seconds": sum(steps),
        "steps": len(steps),
        "env_reward": math.nan if reward is None else float(reward),
        "tool_errors": status.count(Status.ERROR),
        "timeouts": status.count(Status.TIMEOUT) + (episode.end is EndReason.STEP_TIMEOUT),
        "bad_calls": status.count(Status.BAD_CALL),
        "end": _ENDS.index(episode.end) if episode.end is not None else -1,
    }


def stat_fields(episodes: Sequence[Episode]) -> dict[str, Tensor]:
    """The episodes' counts as (E,) float64 tensors, one per ``STAT_FIELDS`` name."""
    rows = [episode_stats(e) for e in episodes]
    return {
        field: torch.tensor([row[name] for row in rows], dtype=torch.float64)
        for name, field in zip(STATS, STAT_FIELDS, strict=True)
    }


def stats_metrics(fields: Mapping[str, Tensor]) -> dict[str, float]:
    """The ``env/…`` metrics of a batch whose rows carry ``STAT_FIELDS``."""
    s = {name: fields[field].double() for name, field in zip(STATS, STAT_FIELDS, strict=True)}
    n = max(s["turns"].numel(), 1)
    turns, ran, steps = float(s["turns"].sum()), float(s["tool_ran"].sum()), float(s["steps"].sum())
    rewarded = s["env_reward"][~torch.isnan(s["env_reward"])]
    metrics = {
        "env/turns": turns / n,
        "env/tool_calls_per_turn": float(s["tool_calls"].sum()) / max(turns, 1.0),
        "env/tokens_model": float(s["tokens_model"].sum()) / n,
        "env/tokens_observation": float(s["tokens_observation"].sum()) / n,
        "env/tool_latency_s": float(s["tool_seconds"].sum()) / ran if ran else 0.0,
        "env/tool_latency_max_s": max(s["tool_seconds_max"].tolist(), default=0.0),
        "env/step_s": float(s["step_seconds"].sum()) / steps if steps else 0.0,
        "env/reward": float(rewarded.mean()) if rewarded.numel() else 0.0,
        "env/rewarded": rewarded.numel() / n,
        "env/tool_errors": float(s["tool_errors"].sum()),
        "env/timeouts": float(s["timeouts"].sum()),
        "env/bad_calls": float(s["bad_calls"].sum()),
    }
    for index, reason in enumerate(_ENDS):
        metrics[f"env/end/{reason.value}"] = float((s["end"] == index).sum()) / n
    return metrics


def batch_metrics(batch) -> dict[str, float]:
    """``stats_metrics`` of a sampled batch, or nothing for a batch of single responses."""
    if STAT_FIELDS[0] not in batch.keys():  # noqa: SIM118 (TensorDict has no `in`)
        return {}
    return stats_metrics({field: batch[field] for field in STAT_FIELDS})


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    if not episodes:
        return stats_metrics({f: torch.zeros(0, dtype=torch.float64) for f in STAT_FIELDS})
    return stats_metrics(stat_fields(episodes))


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
