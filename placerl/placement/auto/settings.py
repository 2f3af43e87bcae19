"""``strategy: auto`` sets the pick's micro-batch, checkpointing and offload — where you did not.

The search scores each placement with the settings that make it fastest while it fits
(``search.best_settings``); a run on that Plan should use them too, or the memory it was
judged by does not hold. Three config keys carry them:

- ``trainer.micro_batch_size`` (the search's ``micro_batch``: rows per forward/backward on a
  data-parallel worker; null: its whole share),
- ``model.gradient_checkpointing``,
- ``placement.offload``.

A key the user wrote (in the file or as an override: pydantic's ``model_fields_set``) is a
constraint, not a suggestion: the search tries only that value (``search.fixed``), and auto
leaves it. The values applied are written to ``config.yaml`` like any other, and to
``planner.json`` (``auto/state.py``) so a resume applies the same ones. Micro-batches and
checkpointing change the training only by fp32 summation order; offload not at all.
"""

from __future__ import annotations

from math import ceil
from typing import Any

from placerl.placement.cost.machine import Machine
from placerl.placement.cost.memory import slot_roles
from placerl.placement.cost.workload import Workload
from placerl.placement.search.enumerate import Candidate, micro_batches
from placerl.placement.search.search import Scored, score
from placerl.types import Role

# (Candidate field, config section, key in it)
SETTINGS = (
    ("micro_batch", "trainer", "micro_batch_size"),
    ("checkpointing", "model", "gradient_checkpointing"),
    ("offload", "placement", "offload"),
)


def key_of(name: str) -> str:
    section, key = next((s, k) for n, s, k in SETTINGS if n == name)
    return f"{section}.{key}"


def explicit(cfg: Any) -> dict[str, Any]:
    """The settings the user set (file or override): the search holds to these values."""
    out = {}
    for name, section, key in SETTINGS:
        part = getattr(cfg, section)
        if key in part.model_fields_set:
            out[name] = getattr(part, key)
    return out


def apply_settings(cfg: Any, settings: dict[str, Any], fixed: dict[str, Any]) -> Any:
    """``cfg`` with the settings the user left unset taken from ``settings``. The copies keep
    the user's ``model_fields_set``: an applied value is not the user's."""
    updates: dict[str, Any] = {}
    for name, section, key in SETTINGS:
        if name in fixed or getattr(getattr(cfg, section), key) == settings[name]:
            continue
        part = updates.get(section, getattr(cfg, section))
        new = part.model_copy(update={key: settings[name]})
        object.__setattr__(new, "__pydantic_fields_set__", set(part.model_fields_set))
        updates[section] = new
    return cfg.model_copy(update=updates) if updates else cfg


def _show(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def setting_lines(pick: Scored, w: Workload, m: Machine, fixed: dict[str, Any]) -> list[str]:
    """One line per setting: the value the run uses, and why."""
    c = pick.candidate
    dp = c.plan.roles[Role.ACTOR].dp_size
    why = {
        "micro_batch": _micro_batch_why(c, w, m, dp),
        "checkpointing": _checkpointing_why(c, w, m, dp),
        "offload": _offload_why(c, w, m),
    }
    lines = []
    for name, _, _ in SETTINGS:
        value = fixed[name] if name in fixed else getattr(c, name)
        reason = "yours: the search held to it" if name in fixed else f"applied: {why[name]}"
        lines.append(f"auto: {key_of(name)} = {_show(value)} ({reason})")
    return lines


def _misfit(c: Candidate, w: Workload, m: Machine, **change: Any) -> str | None:
    """Why ``c`` with ``change`` does not fit (None: it fits)."""
    s = score(Candidate(**{**c.__dict__, **change}), w, m)
    return None if s.feasible else s.reason


def _micro_batch_why(c: Candidate, w: Workload, m: Machine, dp: int) -> str:
    sizes = micro_batches(w, dp)
    if c.micro_batch is None:
        share = ceil(w.rows / max(1, dp) / max(1, w.minibatches))
        return f"each worker's whole share ({share} rows) fits in one pass, the fewest calls"
    if c.micro_batch not in sizes or sizes.index(c.micro_batch) == 0:
        return "the pick's"
    larger = sizes[sizes.index(c.micro_batch) - 1]
    problem = _misfit(c, w, m, micro_batch=larger)
    what = "the whole share" if larger is None else f"{larger} rows"
    if problem is None:
        return "the pick's, predicted fastest"
    return f"the largest that fits: {what} does not ({problem})"


def _checkpointing_why(c: Candidate, w: Workload, m: Machine, dp: int) -> str:
    if not c.checkpointing:
        return "activations fit without recomputing blocks in backward"
    problem = _misfit(c, w, m, checkpointing=False, micro_batch=micro_batches(w, dp)[-1])
    if problem is None:
        return "the pick's, predicted fastest"
    return f"no micro-batch fits without it ({problem})"


def _offload_why(c: Candidate, w: Workload, m: Machine) -> str:
    if c.plan.groups[0].slots[0].kind != "gpu":
        return "it has no effect on CPU workers"
    if w.offline:
        return "sft, rm and dpo keep their models on the device"
    if not c.offload:
        crowded = any(
            len([r for r in rs if r in w.shapes]) > 1 for _, rs in slot_roles(c.plan, True)
        )
        return "the colocated models fit at once" if crowded else "one model per device"
    problem = _misfit(c, w, m, offload=False)
    if problem is None:
        return "the pick's, predicted fastest"
    return f"the colocated models do not fit at once ({problem})"
