"""Profiling: measure this machine for the planner's cost model (``placerl profile``).

It runs placerl's own roles, the sampler, collectives, Ray calls and tiny real runs (through
the trainer and the runtime), so it sits above them: nothing in ``placement``, ``runtime``,
``stages``, ``roles`` or ``algos`` imports it. What it writes, a profile JSON, is read back by
``placement/cost/profiles.py`` and ``placement/cost/calibration.py``.

- ``profile``: ``run_profile`` (the CPU measurements and the fitted ``Machine``), the store;
- ``measure``: the timers (medians, thread counts taking turns), the random model, two-process
  runs;
- ``roles``: placerl's actor and critic calls, fitted to FLOP/s and per-call intercepts;
- ``ray_calls``: a phase call's round trip and a worker's update over Ray;
- ``runs``: tiny real runs (process baselines, the controller's own work a step);
- ``gpu``: the same on a CUDA device;
- ``command``: ``placerl profile``'s arguments.
"""
