"""``placement.strategy: auto`` and ``placerl plan --auto``: one ranking, the pick, pinned.

Both rank the same candidates the same way (``rank``): the worker placements of the run's
cluster and, on this machine, the one-process ``local`` plan, under the constants
``calibrate`` finds here — a stored profile whose conditions hold now, rescaled or of the
closest shape where it must be (``placement/cost/calibration.py``). Where no profile is usable,
both profile first when given a ``profiler`` (``placerl/profiling``, which sits above the
runtime: the trainer and the CLI hand it in), else they say the defaults stand in. With
``max_staleness > 0`` only plans that run stale batches compete (Separate: the rollout on
devices of its own; local: a shadow copy). Settings the user set (``trainer.micro_batch_size``,
``model.gradient_checkpointing``, ``placement.offload``) hold the search to their values; the
others are taken from the pick (``settings.py``).

``prepare_auto`` is what ``train`` calls before anything is built: it decides (or, resuming,
reads the pinned decision back from ``run_dir/planner.json``, ``state.py``), prints the pick
and one line per applied setting, and returns the config with the settings applied — the
config that ``config.yaml`` stores and a resume compares against. The runtime then asks
``runs_in_process`` (the local runtime for a ``local`` pick) or ``plan_from_config``, which
calls ``auto_plan`` for the pinned Plan. The decision is written to ``planner.json`` with
``config.yaml``, once the run is built (``monitor_for``): a resume refused for a changed config
leaves both as they were. Watching the run, trials and re-plans live in ``replan.py``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from placerl.errors import UserError
from placerl.placement.auto.settings import apply_settings, explicit, key_of, setting_lines
from placerl.placement.auto.state import AutoState, load_state, settings_of
from placerl.placement.cost.calibration import SPEC as SPEC_UNCERTAINTY
from placerl.placement.cost.calibration import Calibration, calibrate
from placerl.placement.cost.hardware import engine_spec, parse_cluster, spec_cluster
from placerl.placement.cost.machine import Machine, from_spec
from placerl.placement.cost.phases import step_phases
from placerl.placement.cost.schedule import predict_step
from placerl.placement.cost.shapes import ModelShape, named_shape
from placerl.placement.cost.workload import Workload, workload_from_config
from placerl.placement.plan.cluster import local_slot
from placerl.placement.plan.config import cluster_for, local_plan, needed_roles, worker_cluster
from placerl.placement.plan.plan import Cluster, Plan
from placerl.placement.search.explain import rounds_note, tools_note, why
from placerl.placement.search.search import SearchResult, score, search
from placerl.types import Role


@dataclass
class Decision:
    """What the run's runtime carries out and its monitor watches."""

    state: AutoState  # the pinned Plan, its settings and history (planner.json)
    workload: Workload  # the run's, with the pinned settings
    cluster: Cluster
    fixed: dict[str, Any]  # the settings the user set: every search holds to them
    user_config: Any  # the config as given (a re-plan resumes with it, settings unapplied)
    result: SearchResult | None = None
    pinned: bool = False  # by prepare_auto: the runtime carries out this one, not a new pick
    started_at: float | None = None  # time.time() when prepare_auto began (start-up cost)

    @property
    def plan(self) -> Plan:
        return self.state.plan

    @property
    def machine(self) -> Machine:
        return self.state.machine

    @property
    def predicted_step_s(self) -> float:
        return self.state.predicted_step_s


_DECISIONS: dict[str, Decision] = {}  # run_dir -> the decision its runtime carries out


STALE_OK = ("separate", "local")
EPISODE_NOTES = (
    "tools:",
    "dynamic sampling:",
)  # ``episode_notes``' lines  # plans that run stale batches: a rollout copy of its own


def _search(w: Workload, cluster: Cluster, m: Machine, fixed=None, extra=()) -> SearchResult:
    result = search(w, cluster, m, extra, fixed=fixed)
    if w.max_staleness > 0:  # the runtime needs a rollout copy to run stale batches
        result.ranked = [s for s in result.ranked if s.candidate.plan.strategy in STALE_OK]
    return result


Profiler = Callable[[str, ModelShape, Callable[[str], None]], None]


def calibration_for(
    device: str,
    shape: ModelShape,
    profile: str | None = None,
    profiler: Profiler | None = None,
    say: Callable[[str], None] = print,
) -> Calibration:
    """``calibrate``; where nothing measured here applies, ``profiler`` measures it first."""
    c = calibrate(device, shape, profile)
    if c.usable or profiler is None:
        return c
    say(f"auto: no usable profile ({c.note.removeprefix('calibration: ')}): profiling first")
    profiler(device, shape, say)
    return calibrate(device, shape, probe=False)  # just measured: its conditions are now's


def rank(
    cfg: Any, w: Workload, cluster: Cluster, extra: list[Plan], calibration: Calibration
) -> SearchResult:
    """Every candidate of ``w`` on ``cluster`` plus ``extra`` (the local plan) under
    ``calibration``, holding the user's settings: what ``plan --auto`` shows, auto picks."""
    fixed = explicit(cfg)
    result = _search(w, cluster, calibration.machine, fixed, extra)
    result.notes.append(calibration.note)
    if fixed:
        held = ", ".join(f"{key_of(k)}={v}" for k, v in fixed.items())
        result.notes.append(f"held to the settings you set: {held}")
    result.notes += episode_notes(
        w, result, lambda v: _search(v, cluster, calibration.machine, fixed, extra)
    )
    return result


def episode_notes(w: Workload, result: SearchResult, search_for) -> list[str]:
    """What tools and dynamic sampling do to the ranking (``explain.tools_note`` and
    ``rounds_note``); ``search_for(workload)`` ranks another workload the same way."""
    notes = []
    e = w.episodes
    if e is not None and e.tool_wait_s > 0:
        untooled = search_for(w.with_(episodes=dataclasses.replace(e, tool_s=0.0)))
        notes.append(tools_note(result, untooled, e.tool_wait_s))
    if w.gen_rounds > 1 and result.pick is not None:
        notes.append(rounds_note(w.gen_rounds, result.pick.prediction.phases["generate"]))
    return [n for n in notes if n]


def with_notes(plan: Plan, notes: tuple[str, ...]) -> Plan:
    return dataclasses.replace(plan, notes=notes)


def decide(
    cfg: Any, cluster: Cluster, profiler: Profiler | None = None, say=print
) -> tuple[Decision, list[str]]:
    """A fresh pick for ``cfg`` on ``cluster``, and the lines that say what and why."""
    w = workload_from_config(cfg)
    fixed = explicit(cfg)
    c = calibration_for(device_name(cluster), w.shapes[Role.ACTOR], None, profiler, say)
    result = rank(cfg, w, cluster, local_plans(cfg), c)
    pick = result.pick
    if pick is None:
        reason = result.ranked[0].reason if result.ranked else "no candidate"
        held = ", ".join(f"{k}={v}" for k, v in fixed.items())
        if held:
            reason += f" (the search held to your {held})"
        raise UserError(f"auto: no plan fits this cluster: {reason}", where="placement.strategy")
    m = c.machine
    lines = [f"auto: {pick.name}, predicted {pick.step_s:.3g} s a step ({c.note})"]
    lines.append(f"auto: {why(result)}")
    lines += [f"auto: {n}" for n in result.notes if n.startswith(EPISODE_NOTES)]
    plan = with_notes(pick.candidate.plan, (*lines, *pick.candidate.plan.notes))
    applied = setting_lines(pick, w, m, fixed)
    state = AutoState(
        plan,
        pick.name,
        settings_of(pick.candidate),
        m,
        pick.step_s,
        applied,
        events=[lines[0]],
        uncertainty=c.uncertainty,
    )
    decision = Decision(state, pick.candidate.applied(w), cluster, fixed, cfg, result)
    return decision, [*lines, *applied]


def _resumed(cfg: Any, cluster: Cluster, state: AutoState) -> tuple[Decision, list[str]]:
    """The pinned decision of a resumed run; what the user set now still wins."""
    w = workload_from_config(cfg)
    fixed = explicit(cfg)
    cpu = cluster.slots[0].kind != "gpu"
    state.settings |= {k: v for k, v in fixed.items() if not (k == "offload" and cpu)}
    c = state.candidate
    cw = c.applied(w)
    state.predicted_step_s = predict_step(c.plan, cw, step_phases(c.plan, cw, state.machine)).step_s
    state.applied = setting_lines(score(c, w, state.machine), w, state.machine, fixed)
    lines = [
        f"auto: resuming on the pinned plan {state.name} (since step {state.since}, "
        f"{state.replans} re-plan(s) so far; {Path(cfg.run_dir) / 'planner.json'}), "
        f"predicted {state.predicted_step_s:.3g} s a step",
        *state.applied,
    ]
    return Decision(state, cw, cluster, fixed, cfg), lines


def runs_in_process(cfg: Any) -> bool:
    """Whether the run's Plan keeps every role in this process (the local runtime):
    ``strategy: local``, or ``auto`` whose pinned pick is the local plan."""
    p = cfg.placement
    if p.strategy != "auto":
        return p.strategy == "local"
    return auto_plan(cfg, cluster_for(cfg)).strategy == "local"


def auto_plan(cfg: Any, cluster: Cluster) -> Plan:
    """The run's pinned Plan (``prepare_auto``), else a fresh pick, remembered for the run's
    monitor (``placerl plan CONFIG`` of an auto config)."""
    d = _DECISIONS.get(str(cfg.run_dir))
    if d is None or not d.pinned or not d.state.fits(cluster):
        d, _ = decide(cfg, cluster)
        _DECISIONS[str(cfg.run_dir)] = d
    return d.plan


def prepare_auto(cfg: Any, resume: bool, say, profiler: Profiler | None = None) -> Any:
    """``cfg`` with the auto pick's settings applied (unchanged unless ``strategy: auto``);
    ``resume``: the run's pinned decision, so the resumed config is the saved one;
    ``profiler``: measures this machine first where no profile is usable."""
    if cfg.placement.strategy != "auto":
        return cfg
    cluster = cluster_for(cfg)
    state, note = load_state(cfg.run_dir) if resume else (None, None)
    if note:
        say(note)
    if state is not None and not state.fits(cluster):
        say(f"auto: the pinned plan {state.name} uses slots this cluster lacks: planning afresh")
        state = None
    if state:
        decision, lines = _resumed(cfg, cluster, state)
    else:
        decision, lines = decide(cfg, cluster, profiler, say)
    decision.pinned = True
    decision.started_at = time.time()  # the monitor measures the start-up from here
    _DECISIONS[str(cfg.run_dir)] = decision  # written to planner.json by monitor_for
    for line in lines:
        say(line)
    return apply_settings(cfg, decision.state.settings, decision.fixed)


def local_plans(cfg: Any) -> list[Plan]:
    """The one-process plan, a candidate wherever this machine runs the roles (no Ray
    cluster at ``placement.ray_address``)."""
    p = cfg.placement
    if p.ray_address:
        return []
    return [
        local_plan(
            needed_roles(cfg),
            Cluster((local_slot(p.device, p.threads_per_worker),)),
            p.max_staleness,
        )
    ]


def here(cfg) -> tuple[Cluster, list[Plan]]:
    """This machine's (or the Ray cluster's) worker slots, and the local plan."""
    return worker_cluster(cfg), local_plans(cfg)


def device_name(cluster: Cluster) -> str:
    if cluster.slots[0].kind == "cpu":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else "gpu"


def with_named_size(w: Workload, size: str) -> Workload:
    """Every model of ``w`` at a named Llama shape (value models with a scalar head)."""
    shape = named_shape(size)
    value = shape.as_value_model()
    shapes = {r: value if r in (Role.CRITIC, Role.REWARD) else shape for r in w.shapes}
    return w.with_(shapes=shapes)


def run_search(
    cfg, cluster_text: str | None, profile: str | None, size: str | None = None, profiler=None
) -> tuple[SearchResult, Workload]:
    """``placerl plan --auto``'s ranking: ``rank`` on this machine (or the Ray cluster), as
    ``strategy: auto`` ranks; with ``--cluster`` on hardware that is not here (specs)."""
    w = workload_from_config(cfg)
    if size:
        w = with_named_size(w, size)
    if not cluster_text:
        cluster, extra = here(cfg)
        device = device_name(cluster)
        say = lambda line: print(line, file=sys.stderr)  # noqa: E731
        c = calibration_for(device, w.shapes[Role.ACTOR], profile, profiler, say)
        return rank(cfg, w, cluster, extra, c), w
    count, spec = parse_cluster(cluster_text)
    note = f"calibration: {spec.name} specs (on paper, nothing profiled), engine {w.engine}"
    if w.precision == "fp32":
        w = w.with_(precision="bf16")
        note += "; bf16 assumed on GPU"
    m = from_spec(spec, engine_spec(w.engine))
    c = Calibration(m, f"{note}; predictions ±{SPEC_UNCERTAINTY:.0%}", SPEC_UNCERTAINTY)
    return rank(cfg, w, spec_cluster(count, spec), [], c), w
