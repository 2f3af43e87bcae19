"""Placement: which role lives on which devices (a Plan is data).

- ``plan``: the Plan dataclass (groups of device slots, role placements, staleness bound);
- ``cluster``: the device slots of this machine or of a Ray cluster;
- ``strategies``: ``flatten``, ``interleave``, ``separate``, ``custom``: pure ``-> Plan``;
- ``validate``: what does not fit, by name (groups, dp sizes, shards, memory);
- ``from_config``: ``plan_from_config(cfg)``, the validated Plan of a run config;
- ``render``: the table and per-slot diagram that ``placerl plan`` prints.

This package root imports nothing, so ``placerl.placement.plan`` stays cheap to import and the
config schema can be imported by ``from_config`` without a cycle.
"""
