"""The startup summary (issue 21.8): what will run, said once, before the first step."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.startup import count, plan_lines
from placerl.trainer import train
from tests.conftest import fast_overrides


def _summary(tiny_model_dir, run_dir, stage: str, *extra: str, resume=False) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    overrides = [*fast_overrides(tiny_model_dir, run_dir, stage, steps=2), *extra]
    train(load_config(None, overrides, RunConfig), resume=resume, console=console)
    text = out.getvalue()
    return text[: text.index("  outputs:") + 300]  # the block, not what the run printed after


def test_an_online_run_says_what_it_will_do(tiny_model_dir, tmp_path):
    text = _summary(
        tiny_model_dir,
        tmp_path / "grpo",
        "grpo",
        "reward.function=tests.conftest:length_reward",
        "trainer.report_to=[tensorboard]",
    )
    assert text.count("placerl grpo: 2 steps on cpu, fp32") == 1
    assert f"model: {tiny_model_dir}" in text
    assert "policy: llama, " in text and "layers" in text and "trainable" in text
    assert "data: 64 rows of built-in reversal; one pass is 16 steps of 4" in text
    assert "batch: 4 prompts x 2 samples = 8 responses a step; max_new_tokens 4" in text
    assert "prompt lengths: tokens p50 " in text
    assert "placement: local (on-policy)" in text and "actor" in text and "rollout" in text
    assert "reward: function tests.conftest:length_reward" in text
    assert "start: fresh, from step 0" in text
    assert f"outputs: {tmp_path / 'grpo'}: metrics.jsonl (tensorboard)" in text


def test_lora_and_resume_are_shown(tiny_model_dir, tmp_path):
    run_dir, lora = tmp_path / "sft", ("model.lora.r=4",)
    _summary(tiny_model_dir, run_dir, "sft", *lora)
    text = _summary(tiny_model_dir, run_dir, "sft", *lora, "trainer.steps=3", resume=True)
    assert "placement: every model in this process" in text
    assert "batch: 4 rows a step; data.max_len" in text
    line = next(line for line in text.splitlines() if "policy:" in line)
    assert "%)" in line  # LoRA: the trainable share of all parameters
    assert "start: resumed from " in text and "step_" in text and "(step 2 of 3)" in text


@pytest.mark.parametrize(
    "n,shown", [(812, "812"), (6_200, "6.2k"), (6_210_000, "6.21M"), (1_540_000_000, "1.54B")]
)
def test_parameter_counts_read_at_a_glance(n, shown):
    assert count(n) == shown


def test_the_plan_is_one_line_per_group():
    from placerl.placement.plan.plan import Cluster, DeviceSlot
    from placerl.placement.plan.strategies import separate
    from placerl.types import Role

    cluster = Cluster(tuple(DeviceSlot("cpu", i) for i in range(3)))
    plan = separate((Role.ACTOR, Role.ROLLOUT, Role.REFERENCE, Role.REWARD), cluster)
    lines = plan_lines(plan)
    assert len(lines) == len(plan.groups)
    assert all("(" in line and "):" in line for line in lines)
    assert {r.value for r in plan.roles} <= {w.strip(",") for line in lines for w in line.split()}


@pytest.mark.parametrize("stage,whole", [("sft", "prompt+completion"), ("dpo", "prompt+response")])
def test_offline_runs_show_the_rows_lengths_and_what_max_len_cuts(
    tiny_model_dir, tmp_path, stage, whole
):
    """Issue 21.9: lengths are chosen from the data, so the offline stages report the spread
    of their rows' lengths too, and how many rows ``data.max_len`` cuts."""
    text = _summary(tiny_model_dir, tmp_path / stage, stage)
    assert "prompt lengths: tokens p50 " in text
    line = next(line for line in text.splitlines() if f"{whole} lengths:" in line)
    assert "tokens p50 " in line and ", max " in line
    assert "no row over data.max_len 1024" in line
    # a limit below the longest rows: the share that is cut, and the lengths before the cut
    text = _summary(tiny_model_dir, tmp_path / f"{stage}-short", stage, "data.max_len=14")
    line = next(line for line in text.splitlines() if f"{whole} lengths:" in line)
    assert " rows (" in line and "%) over data.max_len 14, cut to fit" in line
    longest = int(line.split(", max ")[1].split(";")[0])
    assert longest > 14  # the lengths as the data has them, not as cut


def test_length_lines_count_the_cut_rows():
    from placerl.data.examples import EncodedPair, SFTExample
    from placerl.startup import offline_length_lines

    rows = [SFTExample([1] * 3, [2] * 5), SFTExample([1] * 4, [2] * 2, truncated=True, uncut=40)]
    prompts, whole = offline_length_lines(rows, max_len=8)
    assert prompts == "  prompt lengths: tokens p50 4, p90 4, p99 4, max 4"
    assert whole.endswith("max 40; 1 of 2 rows (50.0%) over data.max_len 8, cut to fit")
    pairs = [EncodedPair([1, 2], [3, 4, 5], [6])]
    assert offline_length_lines(pairs, 9)[1] == (
        "  prompt+response lengths: tokens p50 5, p90 5, p99 5, max 5; no row over data.max_len 9"
    )
