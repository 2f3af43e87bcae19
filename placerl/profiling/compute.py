"""The profile's compute measurements besides the role calls: placerl's sampler's decode steps
and one AdamW step."""

from __future__ import annotations

from placerl.placement.cost.shapes import ModelShape
from placerl.profiling.measure import synced, timed_threads
from placerl.profiling.roles import _fit


def measure_decode(model, shape: ModelShape, threads: int, device="cpu") -> dict[str, float]:
    """``measure_decode_at`` on one thread count."""
    return measure_decode_at(model, shape, (threads,), device)[0]


ROWS = (2, 8, 32)
REPEATS = 3


def decode_rows_for(shape: ModelShape, decode_flops_per_s: float, seconds: float = 0.25):
    """``ROWS``, fewer where 32 decode steps of 32 rows would take over ``seconds`` at
    ``decode_flops_per_s`` (a larger model): the intercept comes from the few-row points, the
    slope from the most rows that fit, at least 1, 2 and 4."""
    per_row = 32 * shape.flops_per_token(24)
    most = max(4, min(ROWS[-1], int(seconds * decode_flops_per_s / per_row)))
    return (max(1, most // 16), max(2, most // 4), most)


def measure_decode_at(
    model,
    shape: ModelShape,
    thread_counts,
    device="cpu",
    row_counts=ROWS,
    advance=None,
    repeats: int = REPEATS,
    long: int = 36,
) -> list[dict]:
    """Decode-step seconds at ``row_counts`` rows (``(t36 - t4) / 32`` of placerl's sampler, or
    ``long`` instead of 36) on
    each thread count (``timed_threads``), fitted by least squares to ``layers · overhead +
    rows · flops_per_token / decode_flops``."""
    import torch

    from placerl.rollout.sampling import SamplingParams, generate

    prompt, short = 8, 4
    steps: list[dict[int, float]] = [{} for _ in thread_counts]
    for done, rows in enumerate(row_counts):
        ids = torch.randint(3, shape.vocab, (rows, prompt)).to(device)
        mask = torch.ones_like(ids)
        times = {}
        for n in (short, long):
            params = SamplingParams(max_new_tokens=n)
            run = synced(
                lambda p=params, ids=ids, mask=mask: generate(
                    model, ids, mask, p, eos_token_id=-1, pad_token_id=0
                ),
                device,
            )
            times[n] = timed_threads(run, thread_counts, repeats)
        for i in range(len(thread_counts)):
            steps[i][rows] = max(1e-6, (times[long][i] - times[short][i]) / (long - short))
        if advance is not None:
            advance((done + 1) / len(row_counts))
    context = prompt + (short + long) / 2
    out = []
    for per_rows in steps:
        flops = [r * shape.flops_per_token(context) for r in per_rows]
        rate, icpt = _fit(list(per_rows.values()), flops)
        out.append(
            {
                "decode_step_s": per_rows,
                "decode_overhead_per_layer": icpt / shape.layers,
                "decode_flops": rate,
            }
        )
    return out


def measure_optimizer(model, device="cpu") -> float:
    """Parameters per second of one AdamW step, on the threads torch is set to."""
    import torch

    return measure_optimizer_at(model, (torch.get_num_threads(),), device)[0]


def measure_optimizer_at(model, thread_counts, device="cpu", repeats: int = 5) -> list[float]:
    """``measure_optimizer`` on each of ``thread_counts``, taking turns (``timed_threads``)."""
    import torch

    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    params = sum(p.numel() for p in model.parameters())
    return [params / s for s in timed_threads(synced(opt.step, device), thread_counts, repeats)]
