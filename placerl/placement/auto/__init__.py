"""``placement.strategy: auto``: the pick for a run, pinned in ``planner.json``, and re-plans."""
