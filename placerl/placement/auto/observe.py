"""What a run measured, against what the cost model predicted: the refit of ``strategy: auto``.

``observed_phases`` maps a step's ``time/<phase>`` metrics onto the cost model's phases (the
controller sees a generation where it waits for it); ``refit`` scales the machine's rates so
each kind of phase — generation, forward passes, updates, the controller's own work — matches
the median of its measured times on the running Plan. A refit of one Plan cannot learn what
separates it from the others (a Ray call against an in-process one), which is why the
re-planner tries candidates rather than trusting the refit alone (``replan.py``).
"""

from __future__ import annotations

import statistics

from placerl.placement.cost.machine import Machine

GENERATE = ("generate",)
FORWARD = ("score", "reference", "values", "old_log_probs", "sync_guard")
LEARN = ("update", "critic_update")
CONTROLLER = ("controller",)
HIDDEN = 0.05  # a pipelined rollout whose wait is under this share of the step is hidden


def phase_times(metrics: dict[str, float]) -> dict[str, float]:
    """A step's ``time/<phase>`` metrics by phase name (``time/step`` left out)."""
    return {k[5:]: v for k, v in metrics.items() if k.startswith("time/") and k != "time/step"}


def observed_phases(times: dict[str, float], step_s: float | None, pipelined: bool):
    """One step's phases as the cost model names them, from its ``time/<phase>`` metrics.

    The controller sees a generation where it waits for it: in ``generate``, or, when the
    sample was launched before (the experience pipeline), in ``wait_rollout``. Unpipelined,
    the generation is their sum. Pipelined (Separate, stale batches), a rollout that makes the
    trainer wait sets the pace: its cycle is the step less the sync (``schedule``); one that
    never does is hidden, and this step says nothing of its speed (a local background
    rollout's own ``ahead/generate`` does). ``controller`` is the step less every phase."""
    out = {k: v for k, v in times.items() if not k.startswith("ahead/")}
    phases = sum(out.values())
    if "generate" in out or "wait_rollout" in out:
        gen, wait = out.pop("generate", 0.0), out.pop("wait_rollout", 0.0)
        if not pipelined:
            out["generate"] = gen + wait
        elif "ahead/generate" in times:
            out["generate"] = times["ahead/generate"]
        elif step_s and wait >= HIDDEN * step_s:
            out["generate"] = step_s - out.get("sync", 0.0)
    if step_s:
        out["controller"] = max(0.0, step_s - phases)
    return out


def refit_factors(predicted: dict[str, float], measured: dict[str, list[float]]) -> dict:
    """Measured / predicted per kind of phase (the median over its phases and steps)."""
    out = {}
    kinds = (
        ("generation", GENERATE),
        ("forward", FORWARD),
        ("update", LEARN),
        ("controller", CONTROLLER),
    )
    for kind, names in kinds:
        ratios = [
            statistics.median(measured[n]) / predicted[n]
            for n in names
            if measured.get(n) and predicted.get(n)
        ]
        if ratios:
            out[kind] = statistics.median(ratios)
    return out


def refit(
    m: Machine,
    predicted: dict[str, float],
    measured: dict[str, list[float]],
    workers: bool | None = None,
) -> Machine:
    """Scale the machine's rates so each phase kind's prediction matches the median of its
    measured times (kinds not measured keep their rates). The controller's own work is
    refit for the kind of run measured: with runtime workers (``workers``) or in-process; a
    Ray run's controller says nothing of a local one's."""
    f = refit_factors(predicted, measured)
    changes: dict[str, float] = {}
    if "generation" in f:
        gen = f["generation"]
        changes |= {
            "decode_flops": m.decode_flops / gen,
            "prefill_flops": m.prefill_flops / gen,
            "decode_overhead_per_layer": m.decode_overhead_per_layer * gen,
            "decode_overhead_per_layer_all": m.decode_overhead_per_layer_all * gen,
        }
    if "forward" in f:
        fwd = f["forward"]
        changes |= {
            "forward_flops": m.forward_flops / fwd,
            "value_forward_flops": m.value_forward_flops / fwd,
        }
    if "update" in f:
        up = f["update"]
        changes |= {
            "train_flops": m.train_flops / up,
            "value_train_flops": m.value_train_flops / up,
            "optimizer_params_per_s": m.optimizer_params_per_s / up,
        }
        for kind in ("", "value_", "prefix_"):  # None: a value model takes the policy's
            for name in (f"{kind}update_overhead", f"{kind}update_overhead_all"):
                if getattr(m, name) is not None:
                    changes[name] = getattr(m, name) * up
    if "controller" in f:  # the running Plan's own kind only (``workers``: None, both)
        own = f["controller"]
        if workers is not True:
            changes["step_overhead"] = m.step_overhead * own
        if workers is not False:
            changes["worker_step_overhead"] = m.worker_step_overhead * own
    return m.with_(**changes, source=f"{m.source}, refit to the run") if changes else m
