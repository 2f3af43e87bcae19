"""plot_run: the expected PNGs from synthetic metrics, skipping absent keys, stage subdirs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from placerl.errors import UserError
from placerl.plotting import plot_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _ppo_metrics(steps: int = 12) -> list[dict]:
    records = []
    for step in range(1, steps + 1):
        record = {
            "step": step,
            "reward/mean": math.tanh(step / 4),
            "reward/std": 0.3 / step,
            "kl/mean": 0.01 * step,
            "kl_coef": 0.1 * 0.95**step,
            "loss/policy": 1.0 / step,
            "loss/value": 2.0 / step,
            "time/generate": 0.5,
            "time/update": 0.3,
            "time/step": 0.9,
        }
        if step % 4 == 0:
            record["eval/accuracy"] = step / (steps + 1)
        records.append(record)
    records[2]["kl/mean"] = None  # a NaN logged as null must not break the plot
    return records


def _spans(steps: int = 3) -> list[dict]:
    spans = []
    for step in range(steps):
        t = 1_700_000_000.0 + 2.0 * step
        spans += [
            {"worker": "controller", "phase": "generate", "start": t, "end": t + 1.0, "step": step},
            {
                "worker": "actor-0",
                "phase": "update",
                "start": t + 1.0,
                "end": t + 1.8,
                "step": step,
            },
            {
                "worker": "actor-1",
                "phase": "update",
                "start": t + 1.0,
                "end": t + 1.7,
                "step": step,
            },
        ]
    return spans


def _names(paths: list[Path]) -> set[str]:
    return {p.name for p in paths}


def test_all_plots_from_full_metrics(tmp_path):
    _write_jsonl(tmp_path / "metrics.jsonl", _ppo_metrics())
    _write_jsonl(tmp_path / "timeline.jsonl", _spans())
    paths = plot_run(tmp_path)
    assert _names(paths) == {
        "reward.png",
        "kl.png",
        "losses.png",
        "phase_times.png",
        "accuracy.png",
        "timeline.png",
    }
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_absent_keys_skip_their_plots(tmp_path):
    _write_jsonl(tmp_path / "metrics.jsonl", [{"step": s, "loss/sft": 1.0 / s} for s in (1, 2, 3)])
    out = tmp_path / "elsewhere"
    paths = plot_run(tmp_path, out_dir=out)
    assert paths == [out / "losses.png"]
    assert not (tmp_path / "plots").exists()


def test_empty_metrics_give_no_plots(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert plot_run(tmp_path) == []


def test_missing_run_dir_is_a_user_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="nope"):
        plot_run(missing)


def test_run_dir_without_metrics_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="metrics.jsonl"):
        plot_run(tmp_path)


def test_stage_subdirectories_are_plotted_separately(tmp_path):
    _write_jsonl(tmp_path / "sft" / "metrics.jsonl", [{"step": 1, "loss/sft": 2.0}])
    _write_jsonl(tmp_path / "ppo" / "metrics.jsonl", [{"step": 1, "reward/mean": 0.5}])
    (tmp_path / "notes").mkdir()  # a subdirectory without metrics is ignored
    paths = plot_run(tmp_path)
    assert {p for p in paths if p.parent.parent.name == "sft"} == {
        tmp_path / "sft" / "plots" / "losses.png"
    }
    assert tmp_path / "ppo" / "plots" / "reward.png" in paths
    assert all(p.exists() for p in paths)
    out = tmp_path / "out"
    assert out / "sft" / "losses.png" in plot_run(tmp_path, out_dir=out)


def _bar_colors(fig) -> dict[str, str]:
    """legend label -> face colour of the bars/spans drawn with it."""
    from matplotlib.colors import to_hex

    (ax,) = [a for a in fig.axes if a.get_legend() is not None]
    handles, labels = ax.get_legend_handles_labels()
    out = {}
    for handle, label in zip(handles, labels):
        patch = handle.patches[0] if hasattr(handle, "patches") else handle
        color = patch.get_facecolor()
        out[label] = to_hex(color[0] if len(color) and hasattr(color[0], "__len__") else color)
    return out


def test_each_phase_has_one_colour_in_every_plot():
    from placerl.plotting import _plot_phase_times, _plot_timeline

    records = [
        {"step": s, "time/generate": 0.5, "time/update": 0.3, "time/score": 0.1} for s in (1, 2)
    ]
    spans = [
        {"worker": "controller", "phase": "update", "start": 0.0, "end": 1.0, "step": 1},
        {"worker": "rollout-0", "phase": "rollout.generate", "start": 1.0, "end": 2.0, "step": 1},
        {"worker": "controller", "phase": "score", "start": 2.0, "end": 3.0, "step": 1},
    ]
    bars = _bar_colors(_plot_phase_times(records))
    gantt = _bar_colors(_plot_timeline(spans))
    assert set(gantt) == {"update", "generate", "score"}  # rollout.generate is generate
    for phase in gantt:
        assert bars[phase] == gantt[phase]
    assert len(set(bars.values()) - {"#000000"}) == 3


def test_phase_colours_never_wrap_and_do_not_depend_on_the_other_phases():
    from placerl.plotting import KNOWN_PHASES, phase_colors

    many = [f"phase_{i:02d}" for i in range(40)]
    colors = phase_colors([*KNOWN_PHASES, *many])
    assert len(set(colors.values())) == len(KNOWN_PHASES) + 40  # all distinct
    alone = phase_colors(["update"])
    assert alone["update"] == colors["update"]
    assert phase_colors(["time/update", "actor.update"]) == {"update": colors["update"]}


def _kl_records(coef) -> list[dict]:
    return [{"step": s, "kl/mean": 0.01 * s, "kl/coef": coef(s)} for s in range(1, 21)]


def test_a_drifting_kl_coefficient_is_drawn_on_its_own_axis_from_zero():
    from placerl.plotting import _plot_kl

    fig = _plot_kl(_kl_records(lambda s: 0.05 * (1 - 0.0003 * s)))  # a 0.6% drift
    kl_ax, coef_ax = fig.axes
    assert coef_ax.get_ylim()[0] == 0.0  # the drift is drawn at its true, tiny size
    low, high = coef_ax.get_ylim()
    assert (0.05 - 0.0497) / (high - low) < 0.01
    assert not any(line.get_label() == "kl/coef" for line in kl_ax.get_lines())


def test_a_constant_kl_coefficient_is_written_not_drawn():
    from placerl.plotting import _plot_kl

    fig = _plot_kl(_kl_records(lambda s: 0.05))
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["kl/mean"]
    assert ax.get_title().endswith("(kl/coef = 0.05, constant)")


def test_held_out_loss_joins_the_panel_of_the_one_training_loss():
    from placerl.plotting import _plot_losses

    records = [{"step": s, "loss/sft": 2.0 / s} for s in range(1, 5)]
    records[0]["eval/loss"], records[3]["eval/loss"] = 2.1, 0.6
    (ax,) = _plot_losses(records).axes
    assert [line.get_label() for line in ax.get_lines()] == ["loss/sft", "eval/loss"]
    records[1]["loss/value"] = 1.0  # two training losses: eval/loss gets its own panel
    assert [a.get_title() for a in _plot_losses(records).axes] == [
        "loss/sft",
        "loss/value",
        "eval/loss",
    ]


def test_the_kl_plot_shows_the_k3_kl_and_labels_each_estimator():
    from placerl.plotting import _plot_kl

    records = [{"step": s, "kl/mean": -0.03 + 0.01 * s, "kl/k3": 0.02 * s} for s in range(1, 6)]
    (ax,) = _plot_kl(records).axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0].startswith("kl/k3") and "≥ 0" in labels[0]
    assert labels[1].startswith("kl/mean") and "k1" in labels[1] and "< 0" in labels[1]
    assert "KL" in ax.get_title() and "nats per response" in ax.get_ylabel()


def test_episode_runs_get_a_plot_of_turns_and_tool_time(tmp_path):
    from placerl.plot_episodes import plot_episodes

    records = [
        {
            "step": s,
            "env/turns": 1.5 + s / 10,
            "env/tool_calls_per_turn": 0.5,
            "env/tokens_model": 30.0,
            "env/tokens_observation": 12.0,
            "env/tool_latency_s": 0.2,
            "env/tool_latency_max_s": 0.9,
            "env/step_s": 0.25,
            "time/step": 1.0,
        }
        for s in range(1, 6)
    ]
    records[4]["eval/turns"] = 2.0
    _write_jsonl(tmp_path / "metrics.jsonl", records)
    assert "episodes.png" in _names(plot_run(tmp_path))
    axes = plot_episodes(records).axes
    assert [a.get_title() for a in axes] == ["Turns", "Tokens by source", "Tool time"]
    labels = [line.get_label() for line in axes[2].get_lines()]
    assert any("slowest call" in x for x in labels) and any("environment step" in x for x in labels)
    assert any("eval/turns" in line.get_label() for line in axes[0].get_lines())
    # only the keys a run logged: a run without tools has no tool-time panel
    bare = [{"step": s, "env/turns": 2.0, "env/tokens_model": 9.0} for s in (1, 2)]
    assert [a.get_title() for a in plot_episodes(bare).axes] == ["Turns", "Tokens by source"]
    assert plot_episodes([{"step": 1, "reward/mean": 0.1}]) is None
