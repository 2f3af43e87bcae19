"""The search: every candidate Plan with its settings, scored and ranked, and why the pick wins."""
