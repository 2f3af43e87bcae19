"""Placement: which role lives on which devices (a Plan is data), and the planner that picks it.

Sub-packages, each importing only those before it (``tests/placement/test_import_rules.py``):

- ``plan/``: the Plan dataclass and its parts (``plan``), this machine's or a Ray cluster's
  device slots (``cluster``), the pure strategies ``flatten``, ``interleave``, ``separate``,
  ``custom`` (``strategies``), what does not fit (``validate``), the table ``placerl plan``
  prints (``render``), and what a run config asks of placement (``config``: roles, cluster);
- ``cost/``: the cost model: model shapes, a step's ``Workload``, a device's constants
  (``machine``; ``hardware/`` specs; stored ``profiles``; ``calibration``: which constants run
  here), phase seconds (``time``, ``collectives``), memory (``memory``), the step's phases
  (``phases``) and their schedule (``schedule``);
- ``search/``: every candidate (``enumerate``), scored and ranked (``search``), explained
  (``explain``);
- ``auto/``: ``strategy: auto``: the pick and its settings (``plan``, ``settings``), what a run
  pinned (``state``), watching and re-planning (``replan``).

Above them: ``from_config`` (the validated Plan of a run config, ``auto``'s included) and
``command`` (``placerl plan``). Measuring the machine (``placerl profile``) runs placerl's
roles and runtime, so it lives above the runtime in ``placerl/profiling``; nothing here imports
it, nor the runtime, the stages or the trainer.

This package root imports nothing, so ``placerl.placement.plan.plan`` stays cheap to import.
"""
