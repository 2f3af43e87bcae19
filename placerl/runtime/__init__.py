"""Runtime: turns a Plan into workers and carries roles' calls to them."""
