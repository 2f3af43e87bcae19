"""The ``rollout.vllm:`` section: how the vLLM engine is built when ``rollout.engine: vllm``.

Only read when that engine is picked; placerl's own sampler ignores it.
"""

from __future__ import annotations

from pydantic import Field

from placerl.config.section import Section


class VLLMConfig(Section):
    max_model_len: int | None = Field(
        None,
        gt=0,
        description="Longest prompt + response per row; null: data.max_prompt_len + "
        "rollout.max_new_tokens.",
    )
    gpu_memory_utilization: float = Field(
        0.5,
        gt=0,
        le=1,
        description="GPU only: share of device memory the engine takes (weights + KV cache); "
        "the rest is the trainer's when colocated.",
    )
    cpu_kv_cache_gb: float = Field(
        1.0, gt=0, description="CPU only: KV-cache space in GiB (VLLM_CPU_KVCACHE_SPACE)."
    )
    enforce_eager: bool = Field(
        True,
        description="No CUDA graphs or compilation: starts in seconds; false decodes faster "
        "on GPUs after a longer start.",
    )
    sleep_when_training: bool = Field(
        True,
        description="GPU, engine colocated with the trainer: free the engine's KV cache "
        "while the trainer runs (vLLM sleep mode), restore it before sampling.",
    )
