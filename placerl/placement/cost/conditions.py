"""What a profile was measured under, and whether this machine still runs like that.

A profile's rates hold only on the machine *as it was*: the same cores, as busy. A profile
taken while other jobs ran (load average 6-10 on 2 cores) predicted every strategy 1.4-6.7x
too slow on the quiet machine, and nothing said so. So a profile records its ``Conditions`` —
the load average, a reference matmul's GFLOP/s on 1 thread and on all of them, a copy's
memory bandwidth and a small op's dispatch time — and every use of it probes the machine
again (about a second, ``probe``) and compares (``compare``):

- every rate within ``SAME`` of the profile's: used as it is;
- all slower or faster alike (the rates' ratios within ``UNIFORM`` of each other): the
  machine is *simply* slower or faster, and the profile is rescaled by their geometric mean
  (``Machine.scaled``), with a wider uncertainty;
- otherwise (one thread as fast but all threads slower: a neighbour burning a core; a
  bandwidth that moved apart from the compute; other cores): refused, with the ratios that
  say why. The caller profiles again, or says it cannot.

Beyond the probe's noise, a change of more than ``SPEEDUP`` in the parallel speed-up (the
all-threads matmul over the 1-thread one) is refused, however uniform the rest: cores were (or are) busy with other work,
which a uniform rescale cannot undo — it inflates some of a profile's terms (calls, collectives,
workers) far more than others. Measured: a profile taken beside a process burning a core
probed x1.03 on 1 thread and x1.21 on 2 threads quiet again; rescaled as uniform, its
predictions were off by a median 29%, at most 302%.

The probe's own noise on a shared 2-core VM is a few per cent (medians of alternating
repeats), well inside ``SAME``.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

SAME = 0.12  # every rate within ±12% of the profile's: the machine is as it was
UNIFORM = 1.3  # the fastest-moving rate at most 1.3x the slowest-moving one: uniformly
LIMIT = 3.0  # beyond 3x slower or faster a profile is not rescaled: it is another machine
SPEEDUP = 1.15  # the parallel speed-up (all threads / 1 thread) moved more than this: busy cores
MATMUL_N = 384  # the reference matmul: (384 x 384) @ (384 x 384), fp32, 8 at a time
COPY_MIB = 32
DISPATCH_OPS = 200


@dataclass(frozen=True)
class Conditions:
    threads: int  # torch threads "all" means (the cores placerl may use)
    load_avg: float  # 1-minute load average when measured
    matmul_1: float  # GFLOP/s of the reference matmul on 1 thread
    matmul_all: float  # … on ``threads`` threads
    copy_gbps: float  # GB/s of a 32 MiB tensor copy (read + write), 1 thread
    dispatch_us: float  # µs per small tensor op (Python and torch's dispatch), 1 thread

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Conditions:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})

    def speeds(self) -> dict[str, float]:
        """Each probe as a speed (higher is faster), by name."""
        return {
            "matmul on 1 thread": self.matmul_1,
            f"matmul on {self.threads} threads": self.matmul_all,
            "memory copy": self.copy_gbps,
            "small-op dispatch": 1.0 / self.dispatch_us,
        }


def mean(a: Conditions, b: Conditions) -> Conditions:
    """The conditions over a span probed at its start and end (each rate's geometric mean)."""
    raw = a.to_dict()
    for k in ("matmul_1", "matmul_all", "copy_gbps", "dispatch_us"):
        raw[k] = math.sqrt(getattr(a, k) * getattr(b, k))
    raw["load_avg"] = (a.load_avg + b.load_avg) / 2
    return Conditions.from_dict(raw)


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not every platform has one
        return float("nan")


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fastest_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs after a warm-up: a bandwidth's noise (page cache, a
    neighbour's burst) only ever slows a copy, so its best run is its rate (the median of
    a 32 MiB copy moved ±30% between quiet probes here, the fastest a few per cent)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def probe(threads: int, rounds: int = 9) -> Conditions:
    """About a second of measurements on this machine now; torch's thread count is restored."""
    import torch

    before = torch.get_num_threads()
    a = torch.randn(MATMUL_N, MATMUL_N)
    b = torch.randn(MATMUL_N, MATMUL_N)
    flops = 2 * MATMUL_N**3 * 8

    def matmuls():
        for _ in range(8):
            torch.mm(a, b)

    src = torch.ones(COPY_MIB * 2**20 // 4)
    dst = torch.empty_like(src)
    small = torch.ones(16)
    try:
        for n in (1, threads):  # warm-up: the thread pools, the kernels' first calls
            torch.set_num_threads(n)
            end = time.perf_counter() + 0.1
            while time.perf_counter() < end:
                matmuls()
        times: dict[int, list[float]] = {1: [], threads: []}
        for _ in range(rounds):  # the thread counts take turns: drift hits both alike
            for n in times:
                torch.set_num_threads(n)
                times[n].append(_median_time(matmuls, 1))
        torch.set_num_threads(1)
        copy_s = _fastest_time(lambda: dst.copy_(src), rounds)

        def dispatch():
            x = small
            for _ in range(DISPATCH_OPS):
                x = x + 1.0

        dispatch_s = _median_time(dispatch, rounds)
    finally:
        torch.set_num_threads(before)
    return Conditions(
        threads=threads,
        load_avg=load_average(),
        matmul_1=flops / statistics.median(times[1]) / 1e9,
        matmul_all=flops / statistics.median(times[threads]) / 1e9,
        copy_gbps=2 * src.numel() * 4 / copy_s / 1e9,
        dispatch_us=dispatch_s / DISPATCH_OPS * 1e6,
    )


@dataclass(frozen=True)
class Verdict:
    """How a profile's conditions compare with now: ``speed`` multiplies its rates (1: as it
    was); ``usable`` False: refused, ``reason`` says why."""

    usable: bool
    speed: float
    ratios: dict[str, float]  # now / then, per probe (speeds)
    reason: str

    @property
    def rescaled(self) -> bool:
        return self.usable and self.speed != 1.0


def describe(ratios: dict[str, float]) -> str:
    return ", ".join(f"{name} x{r:.2f}" for name, r in ratios.items())


def compare(then: Conditions, now: Conditions) -> Verdict:
    """Whether a profile measured under ``then`` holds under ``now`` (see the module's rules)."""
    load = f"load average {then.load_avg:.1f} then, {now.load_avg:.1f} now"
    if then.threads != now.threads:
        return Verdict(
            False,
            1.0,
            {},
            f"it was measured with {then.threads} threads, this machine has {now.threads}",
        )
    old, new = then.speeds(), now.speeds()
    ratios = {k: new[k] / old[k] for k in old}
    if all(abs(r - 1) <= SAME for r in ratios.values()):
        return Verdict(True, 1.0, ratios, f"the machine runs as when profiled ({load})")
    moved = (now.matmul_all / now.matmul_1) / (then.matmul_all / then.matmul_1)
    if max(moved, 1 / moved) > SPEEDUP:
        return Verdict(
            False,
            1.0,
            ratios,
            f"the cores' parallel speed-up moved x{moved:.2f} since it was profiled "
            f"({describe(ratios)}; {load}): other work was (or is) using cores",
        )
    low, high = min(ratios.values()), max(ratios.values())
    speed = math.exp(statistics.fmean(math.log(r) for r in ratios.values()))
    if high / low <= UNIFORM and 1 / LIMIT <= speed <= LIMIT:
        return Verdict(
            True,
            speed,
            ratios,
            f"the machine runs uniformly {_faster(speed)} than when profiled ({describe(ratios)}; "
            f"{load}): rates rescaled x{speed:.2f}",
        )
    return Verdict(
        False,
        1.0,
        ratios,
        f"the machine does not run as when profiled, and not uniformly faster or slower "
        f"({describe(ratios)}; {load})",
    )


def _faster(speed: float) -> str:
    return f"{speed:.2f}x faster" if speed >= 1 else f"{1 / speed:.2f}x slower"


_CACHE: dict[int, tuple[float, Conditions]] = {}
CACHE_S = 120.0  # a probe is reused this long within a process (plan, decide, resume)


def probe_now(threads: int) -> Conditions:
    """``probe``, reused within ``CACHE_S`` in this process."""
    hit = _CACHE.get(threads)
    if hit and time.monotonic() - hit[0] < CACHE_S:
        return hit[1]
    now = probe(threads)
    _CACHE[threads] = (time.monotonic(), now)
    return now


def remember(conditions: Conditions) -> None:
    """A probe just made elsewhere (a fresh profile's): reused by ``probe_now``."""
    _CACHE[conditions.threads] = (time.monotonic(), conditions)
