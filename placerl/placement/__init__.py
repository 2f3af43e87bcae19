"""Placement: which role lives on which devices (a Plan is data)."""
