"""PNG plots of a run, read back from ``metrics.jsonl`` (and ``timeline.jsonl``).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, not pyplot:
no global backend switch, no figure registry to leak, safe to call from any thread or a
headless machine. Every plot is optional: one whose keys are absent is skipped, so the same
function serves SFT (losses only), PPO (reward, KL, values) and DPO runs.

Phases have one colour each, the same in the phase-time bars and the timeline and in every
run (``phase_colors``: fixed for the phases placerl has, then distinct extra colours — a
palette never wraps around to reuse one). A worker's span ``role.method`` takes the colour of
the controller phase it carries out (``rollout.generate`` is ``generate``).
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from placerl.errors import UserError
from placerl.logging import METRICS_FILE, TIMELINE_FILE, _read_jsonl, read_metrics
from placerl.plot_episodes import plot_episodes

PLOTS_DIR = "plots"
# The Gantt chart shows only the last steps: over a whole run the bars are too thin to read,
# and what it is for (overlap of workers within a step) is the same in every step.
TIMELINE_MAX_STEPS = 20
# Above this many steps the phase-time bars would be thinner than a pixel: draw areas instead.
MAX_BARS = 200

Records = list[dict[str, Any]]

# Every phase placerl times, in the order their colours are handed out (tab10 first, then the
# light shades of tab20): the colour of a phase never depends on which others a run has.
KNOWN_PHASES = (
    "generate",
    "score",
    "reference",
    "values",
    "advantages",
    "update",
    "eval",
    "sync",
    "wait_rollout",
    "old_log_probs",
    "weights",
    "pairs",
    "rejection",
    "offload",
)
# Worker spans (``role.method``) that carry out a controller phase.
SPAN_PHASES = {
    "rollout.generate": "generate",
    "reward.score": "score",
    "reference.log_probs": "reference",
    "critic.values": "values",
    "actor.log_probs": "old_log_probs",
    "actor.update": "update",
    "actor.fit_grouped": "update",
    "critic.update": "update",
    "rollout.sync": "sync",
}
# Relative spread below which a logged KL coefficient counts as constant (and is annotated).
CONSTANT_RTOL = 1e-6
# The KL lines, when a run logged both (algos/kl.kl_metrics): k3 is the KL to read (never
# negative), k1 thin and dashed, since its batch mean can dip below zero.
KL_LINES = {
    "kl/k3": {"color": "tab:red", "label": "kl/k3 (k3 estimate, ≥ 0)"},
    "kl/mean": {
        "color": "tab:gray",
        "linestyle": "--",
        "linewidth": 1.0,
        "label": "kl/mean (k1 estimate, unbiased, can be < 0)",
    },
}


def _palette() -> list[str]:
    tab10, tab20 = colormaps["tab10"].colors, colormaps["tab20"].colors
    return [to_hex(c) for c in tab10] + [to_hex(c) for c in tab20[1::2]]


def phase_of(name: str) -> str:
    """The phase a span or ``time/<phase>`` key stands for."""
    name = name.removeprefix("time/")
    return SPAN_PHASES.get(name, name)


def _phase_order(name: str) -> tuple[int, str]:
    """Known phases in step order (bottom of the stack first), then the others by name."""
    phase = phase_of(name)
    known = KNOWN_PHASES.index(phase) if phase in KNOWN_PHASES else len(KNOWN_PHASES)
    return known, phase


def phase_colors(names) -> dict[str, str]:
    """A distinct colour per phase of ``names`` (keys are ``phase_of`` the names): known
    phases keep fixed colours; others get unused ones, generated when the palette runs out."""
    palette = _palette()
    fixed = dict(zip(KNOWN_PHASES, palette, strict=False))
    spare = [c for c in palette if c not in fixed.values()]
    extra = sorted({phase_of(n) for n in names} - set(fixed))
    if len(extra) > len(spare):  # more phases than colours: evenly spaced hues, none reused
        count = len(extra) - len(spare)
        spare += [to_hex(colorsys.hsv_to_rgb(i / count, 0.55, 0.8)) for i in range(count)]
    colors = fixed | dict(zip(extra, spare, strict=False))
    return {phase_of(n): colors[phase_of(n)] for n in names}


def _series(records: Records, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over the records that have a finite value for it."""
    steps, values = [], []
    for index, record in enumerate(records):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            steps.append(record.get("step", index))
            values.append(float(value))
    return steps, values


def _has(records: Records, key: str) -> bool:
    return bool(_series(records, key)[0])


def _figure(width: float = 8.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def _plot_reward(records: Records) -> Figure | None:
    """Mean reward per step, with a ±1 std band when ``reward/std`` is logged."""
    if not _has(records, "reward/mean"):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    steps, means = _series(records, "reward/mean")
    ax.plot(steps, means, label="reward/mean", color="tab:blue")
    std_by_step = dict(zip(*_series(records, "reward/std"), strict=True))
    band = [(s, m, std_by_step[s]) for s, m in zip(steps, means, strict=True) if s in std_by_step]
    if band:
        xs, ms, ss = zip(*band, strict=True)
        lower = [m - s for m, s in zip(ms, ss, strict=True)]
        upper = [m + s for m, s in zip(ms, ss, strict=True)]
        ax.fill_between(xs, lower, upper, alpha=0.2, color="tab:blue", label="± reward/std")
    if _has(records, "eval/reward"):
        ax.plot(
            *_series(records, "eval/reward"),
            marker="o",
            color="tab:green",
            label="eval/reward (held-out, greedy)",
        )
    ax.set(title="Reward", xlabel="step", ylabel="reward")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _plot_kl(records: Records) -> Figure | None:
    """KL to the reference (``kl/k3`` solid, ``kl/mean`` dashed: KL_LINES); the KL coefficient β in a panel of its own whose axis starts at
    0, so a coefficient that barely moves looks like it (a twin axis fitted to its range would
    draw a 0.5% drift as a fall). A constant β is written in the title instead."""
    coef_key = next((k for k in ("kl_coef", "kl/coef") if _has(records, k)), None)
    kl_keys = [k for k in KL_LINES if _has(records, k)]
    if not kl_keys and coef_key is None:
        return None
    coef = _series(records, coef_key) if coef_key else ([], [])
    constant = bool(coef[1]) and max(coef[1]) - min(coef[1]) <= CONSTANT_RTOL * max(
        abs(v) for v in coef[1]
    )
    panel = coef_key is not None and not constant
    fig = _figure(height=5.5 if panel else 4.5)
    ax = fig.add_subplot(2, 1, 1) if panel else fig.add_subplot()
    for key in kl_keys:
        style = KL_LINES[key] if len(kl_keys) > 1 else {"color": "tab:red", "label": key}
        ax.plot(*_series(records, key), **style)
    if kl_keys:
        ax.legend(loc="upper left")
    title = "KL(π ‖ π_ref) per response"
    if constant:  # in the title: a note inside the axes would cover the curve somewhere
        title += f" ({coef_key} = {coef[1][0]:.4g}, constant)"
    ax.set(title=title, ylabel="KL (nats per response)")
    ax.grid(alpha=0.3)
    if panel:
        coef_ax = fig.add_subplot(2, 1, 2, sharex=ax)
        coef_ax.plot(*coef, color="tab:gray", label=coef_key)
        coef_ax.set_ylim(0, max(coef[1]) * 1.15)  # from 0: drift shows at its true size
        coef_ax.set(ylabel=coef_key, xlabel="step")
        coef_ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False)
    else:
        ax.set_xlabel("step")
    return fig


def _plot_losses(records: Records) -> Figure | None:
    """One panel per ``loss/*`` key: losses have unrelated scales, so they don't share an axis.
    The held-out ``eval/loss`` joins the panel of the loss it measures when the stage has one
    training loss (SFT, RM, DPO), else it gets a panel of its own."""
    keys = sorted({k for r in records for k in r if k.startswith("loss/") and _has(records, k)})
    held_out = _has(records, "eval/loss")
    panels = keys + (["eval/loss"] if held_out and len(keys) != 1 else [])
    if not panels:
        return None
    cols = min(len(panels), 2)
    rows = (len(panels) + cols - 1) // cols
    fig = _figure(width=5.0 * cols, height=3.2 * rows)
    for index, key in enumerate(panels, start=1):
        ax = fig.add_subplot(rows, cols, index)
        ax.plot(*_series(records, key), color=f"C{index - 1}", label=key)
        if held_out and len(keys) == 1:
            ax.plot(*_series(records, "eval/loss"), marker="o", color="black", label="eval/loss")
            ax.legend()
        ax.set(title=key if len(keys) != 1 or not held_out else f"{key} and eval/loss")
        ax.set(xlabel="step")
        ax.grid(alpha=0.3)
    return fig


def _phase_table(records: Records, keys: list[str]) -> dict[Any, dict[str, float]]:
    """step -> {time key: seconds}; a key missing at a step counts as 0 so stacks stay aligned."""
    table: dict[Any, dict[str, float]] = {}
    for key in keys:
        for step, value in zip(*_series(records, key), strict=True):
            row = table.setdefault(step, dict.fromkeys(keys, 0.0))
            row[key] += value
    return dict(sorted(table.items()))


def _plot_phase_times(records: Records) -> Figure | None:
    """Stacked ``time/<phase>`` per step; ``time/step`` as a line (the gap is overhead).

    Bars up to ``MAX_BARS`` steps; beyond that a stacked area, as bars would be sub-pixel.
    """
    keys = {k for r in records for k in r if k.startswith("time/") and k != "time/step"}
    keys = sorted((k for k in keys if _has(records, k)), key=_phase_order)
    if not keys and not _has(records, "time/step"):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    table = _phase_table(records, keys)
    steps = list(table)
    columns = [[table[step][key] for step in steps] for key in keys]
    colors = phase_colors(keys)
    labels = [phase_of(k) for k in keys]
    if len(steps) > MAX_BARS:
        ax.stackplot(steps, columns, labels=labels, colors=[colors[p] for p in labels])
    elif keys:
        gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
        width = 0.8 * min(gaps) if gaps else 0.8
        bottom = [0.0] * len(steps)
        for label, heights in zip(labels, columns, strict=True):
            ax.bar(steps, heights, width=width, bottom=bottom, label=label, color=colors[label])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if _has(records, "time/step"):
        marker = "." if len(steps) <= MAX_BARS else None
        ax.plot(*_series(records, "time/step"), color="black", marker=marker, label="time/step")
    ax.set(title="Wall time per phase", xlabel="step", ylabel="seconds")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    return fig


ACCURACY_KEYS = ("eval/accuracy", "eval/pairwise_accuracy", "eval/preference_accuracy")


def _plot_accuracy(records: Records) -> Figure | None:
    """Held-out accuracies (exact match; reward-model and DPO pair accuracy), drawn on a fixed
    [0, 1] axis so runs are comparable by eye."""
    keys = [k for k in ACCURACY_KEYS if _has(records, k)]
    if not keys:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for key, color in zip(keys, ("tab:green", "tab:purple", "tab:brown"), strict=False):
        ax.plot(*_series(records, key), marker="o", color=color, label=key)
    ax.set(title="Eval accuracy", xlabel="step", ylabel="accuracy", ylim=(0.0, 1.0))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _plot_timeline(spans: Records) -> Figure | None:
    """Gantt chart: one row per worker, one color per phase, x in seconds from the first span."""
    steps = sorted({s["step"] for s in spans if s.get("step") is not None})
    truncated = len(steps) > TIMELINE_MAX_STEPS
    if truncated:
        shown = set(steps[-TIMELINE_MAX_STEPS:])
        spans = [s for s in spans if s.get("step") in shown]
    if not spans:
        return None
    origin = min(s["start"] for s in spans)
    workers = sorted({s["worker"] for s in spans}, key=lambda w: (w != "controller", w))
    phases = list(dict.fromkeys(s["phase"] for s in spans))
    colors = phase_colors(phases)
    fig = _figure(width=10.0, height=1.2 + 0.6 * len(workers))
    ax = fig.add_subplot()
    for row, worker in enumerate(workers):
        for phase in phases:
            bars = [
                (s["start"] - origin, s["end"] - s["start"])
                for s in spans
                if s["worker"] == worker and s["phase"] == phase
            ]
            if bars:
                color = colors[phase_of(phase)]
                ax.broken_barh(bars, (row - 0.4, 0.8), color=color, label=phase_of(phase))
    ax.set_yticks(range(len(workers)), workers)
    ax.invert_yaxis()
    title = f"Timeline (last {TIMELINE_MAX_STEPS} steps)" if truncated else "Timeline"
    ax.set(title=title, xlabel="seconds from first span")
    ax.grid(alpha=0.3, axis="x")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # phases seen on several rows: one entry
    ax.legend(
        unique.values(), unique.keys(), fontsize="small", loc="upper left", bbox_to_anchor=(1, 1)
    )
    return fig


METRIC_PLOTS: dict[str, Callable[[Records], Figure | None]] = {
    "reward.png": _plot_reward,
    "kl.png": _plot_kl,
    "losses.png": _plot_losses,
    "phase_times.png": _plot_phase_times,
    "accuracy.png": _plot_accuracy,
    "episodes.png": plot_episodes,  # turns and tool time of multi-turn runs
}


def _plot_one(run_dir: Path, out_dir: Path) -> list[Path]:
    """Every applicable plot of one metrics file (and its timeline) into ``out_dir``."""
    records = read_metrics(run_dir)
    figures = {name: plot(records) for name, plot in METRIC_PLOTS.items()}
    timeline = run_dir / TIMELINE_FILE
    if timeline.is_file():
        figures["timeline.png"] = _plot_timeline(_read_jsonl(timeline))
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_save(fig, out_dir / name) for name, fig in figures.items() if fig is not None]


def plot_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write the PNGs of a run into ``run_dir/plots`` (or ``out_dir``); return their paths.

    A run of several stages keeps each stage's metrics in a subdirectory
    (``run_dir/sft/metrics.jsonl``, ``run_dir/ppo/metrics.jsonl``); then each stage is plotted
    into its own ``plots`` folder (or ``out_dir/<stage>``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError("run directory not found", where=str(run_dir))
    if (run_dir / METRICS_FILE).is_file():
        return _plot_one(run_dir, Path(out_dir) if out_dir else run_dir / PLOTS_DIR)
    stages = sorted(p for p in run_dir.iterdir() if (p / METRICS_FILE).is_file())
    if not stages:
        raise UserError(
            "no metrics.jsonl here nor in any stage subdirectory", where=str(run_dir / METRICS_FILE)
        )
    paths: list[Path] = []
    for stage in stages:
        target = Path(out_dir) / stage.name if out_dir else stage / PLOTS_DIR
        paths += _plot_one(stage, target)
    return paths
