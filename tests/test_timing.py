"""PhaseTimer: per-step phase totals, pop/reset, and a wall-clock timeline of spans."""

from __future__ import annotations

import time

import pytest

from placerl.timing import PhaseTimer, Span, timeline_record


def test_repeated_phase_in_one_step_adds_up():
    timer = PhaseTimer()
    for _ in range(2):
        with timer.phase("update"):
            time.sleep(0.02)
    with timer.phase("generate"):
        time.sleep(0.01)
    times = timer.pop()
    assert set(times) == {"time/update", "time/generate", "time/step"}
    assert times["time/update"] >= 0.04
    assert 0.01 <= times["time/generate"] < times["time/update"]
    assert times["time/step"] >= times["time/update"] + times["time/generate"]


def test_pop_resets_for_the_next_step():
    timer = PhaseTimer()
    with timer.phase("generate"):
        time.sleep(0.02)
    first = timer.pop()
    second = timer.pop()
    assert "time/generate" not in second
    assert second["time/step"] < first["time/step"]


def test_phase_is_recorded_even_when_the_body_raises():
    timer = PhaseTimer()
    with pytest.raises(ValueError), timer.phase("score"):
        raise ValueError("reward function failed")
    assert "time/score" in timer.pop()
    assert [span.phase for span in timer.spans] == ["score"]


def test_spans_are_wall_clock_and_ordered():
    timer = PhaseTimer(worker="rollout-0")
    before = time.time()
    with timer.phase("generate"):
        time.sleep(0.01)
    with timer.phase("update"):
        pass
    after = time.time()
    first, second = timer.spans
    assert first.worker == "rollout-0" and first.phase == "generate"
    # time.time() resolution is coarse on some platforms; allow a millisecond of slack.
    assert before - 1e-3 <= first.start < first.end <= second.start <= second.end <= after + 1e-3
    assert first.end - first.start >= 0.01


def test_add_spans_and_pop_spans():
    timer = PhaseTimer()
    timer.add_spans([("actor-1", "update", 10.0, 12.5)])
    with timer.phase("generate"):
        pass
    spans = timer.pop_spans()
    assert spans[0] == Span("actor-1", "update", 10.0, 12.5)
    assert spans[1].worker == "controller"
    assert timer.spans == []


def test_timeline_record_keeps_wall_clock_precision():
    record = timeline_record(Span("w", "p", 1_700_000_000.1234567, 1_700_000_001.5), step=3)
    assert record == {
        "worker": "w",
        "phase": "p",
        "start": 1_700_000_000.123457,
        "end": 1_700_000_001.5,
        "step": 3,
    }
