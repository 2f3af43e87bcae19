"""The episodes plot (``episodes.png``): turns and tool time of multi-turn runs (``env:``).

Three panels, each drawn only from the ``env/*`` keys a run logged (rollout/episodes/metrics.py):
turns per episode (training, and the held-out ``eval/turns``) with tool calls per turn; tokens by
source (the model's, the observations'); and seconds on tools — the mean and slowest tool call
and the mean environment step, the time a batch of episodes idles on its environment. A run
without episodes logs none of them and gets no plot. Helpers are ``plotting``'s, imported when
drawing (``plotting`` registers this plot).
"""

from __future__ import annotations

from typing import Any

PANELS = (  # title, y label, [(key, label)]
    (
        "Turns",
        "per episode",
        [
            ("env/turns", "env/turns (model turns)"),
            ("eval/turns", "eval/turns (held-out, greedy)"),
            ("env/tool_calls_per_turn", "env/tool_calls_per_turn"),
        ],
    ),
    (
        "Tokens by source",
        "tokens per episode",
        [
            ("env/tokens_model", "env/tokens_model (trained)"),
            ("env/tokens_observation", "env/tokens_observation (context)"),
        ],
    ),
    (
        "Tool time",
        "seconds",
        [
            ("env/tool_latency_s", "env/tool_latency_s (mean call)"),
            ("env/tool_latency_max_s", "env/tool_latency_max_s (slowest call)"),
            ("env/step_s", "env/step_s (mean environment step)"),
        ],
    ),
)


def plot_episodes(records: list[dict[str, Any]]):
    """The episodes figure, or None when the run logged no ``env/turns``."""
    from placerl.plotting import _figure, _has, _series

    if not _has(records, "env/turns"):
        return None
    panels = [(t, y, [(k, lab) for k, lab in keys if _has(records, k)]) for t, y, keys in PANELS]
    panels = [p for p in panels if p[2]]
    fig = _figure(width=5.0 * len(panels), height=4.0)
    for index, (title, ylabel, keys) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), index)
        for key, label in keys:
            marker = "o" if key.startswith("eval/") else None
            ax.plot(*_series(records, key), marker=marker, label=label)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig
