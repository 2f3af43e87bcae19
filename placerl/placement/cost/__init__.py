"""The cost model: seconds and bytes of a step's phases under a Plan (imports ``plan`` only)."""
