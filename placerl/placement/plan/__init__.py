"""The Plan and its strategies: plain data and pure functions (imports no other sub-package)."""
