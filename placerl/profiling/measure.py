"""The profile's timers and tools: medians after a warm-up, thread counts taking turns, a random
model of a shape, and two processes that meet on a local port."""

from __future__ import annotations

import statistics
import time

from placerl.placement.cost.shapes import ModelShape


def synced(fn, device="cpu"):
    """``fn`` that waits for the device's queued kernels before returning (CUDA runs them
    asynchronously: without this a timer measures the launch, not the work)."""
    import torch

    if torch.device(device).type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def timed(fn, repeats: int = 3) -> float:
    """The median of ``repeats`` runs after a warm-up. Not the fastest (``timeit``'s advice
    for code in isolation): a run's step time is the median of steps that meet the machine's
    usual jitter (a shared VM's neighbours, the runtime's own threads), and the fastest of a
    few repeats was 10-25% below it on the 2-core VM the accuracy benchmark ran on."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_threads(fn, thread_counts, repeats: int = 5) -> list[float]:
    """``_timed`` on each of ``thread_counts`` torch threads, the counts taking turns repeat by
    repeat: a VM's drift (a neighbour, a kernel thread) then slows every count alike, and
    their ratio, the thread exponent, holds (measured one count after the other, it moved
    0.66-0.91 between profiles of the same model here)."""
    import torch

    for n in thread_counts:  # warm-up: each count's thread pool, caches
        torch.set_num_threads(n)
        fn()
    times: list[list[float]] = [[] for _ in thread_counts]
    for _ in range(repeats):
        for i, n in enumerate(thread_counts):
            torch.set_num_threads(n)
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def build_model(shape: ModelShape, value_head: bool = False):
    """A random Llama of ``shape`` (a critic's token-classification head with ``value_head``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=shape.tied,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        num_labels=1,
    )
    torch.manual_seed(0)
    return (LlamaForTokenClassification if value_head else LlamaForCausalLM)(config)


def run_pair(worker, *args, timeout: float = 120) -> dict[str, float]:
    """``worker(rank, port, queue, *args)`` in two spawned processes that meet on a free local
    port; what rank 0 puts on the queue."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, port, queue, *args)) for r in range(2)]
    for p in procs:
        p.start()
    raw = queue.get(timeout=timeout)
    for p in procs:
        p.join(timeout=timeout / 4)
    return raw
