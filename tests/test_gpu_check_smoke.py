"""benchmarks/gpu_check.py stays runnable where CI has no GPU: its ``--cpu --tiny`` smoke mode,
end to end except the Ray run (which tests/runtime covers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_parses_its_arguments_and_names_its_model():
    gpu_check = _module()
    args = gpu_check.parse_args(["--cpu", "--tiny", "--skip-ray"])
    assert args.cpu and args.tiny and args.skip_ray
    assert gpu_check.parse_args([]).peak_tflops is None  # the device's spec decides
    assert gpu_check.parse_args([]).rows == [32, 256]
    assert gpu_check.QWEN2_05B["vocab_size"] == 151936
    labels = [label for label, _, _ in gpu_check.option_rows()]
    assert labels == ["plain", "gradient checkpointing", "LoRA r=16"]


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_on_cpu(tmp_path, capsys):
    gpu_check = _module()
    args = ["--cpu", "--tiny", "--skip-ray", "--steps", "1", "--prompts", "2", "--samples", "2"]
    args += ["--new-tokens", "4", "--pairs", "4", "--workdir", str(tmp_path)]
    assert gpu_check.main(args) == 0
    out = capsys.readouterr().out
    lines = ("grpo: step", "dpo: step", "update MFU", "placerl / model.generate", "grpo plain")
    for line in (*lines, *(f"{stage}: ok" for stage in gpu_check.STAGES)):
        assert line in out, out
    table = (tmp_path / "gpu_check.md").read_text()  # the one table, beside the figures
    for row in ("| grpo step time |", "| grpo update MFU |", "| grpo step predicted, before"):
        assert row in table, table
