"""Roles: the models of an RLHF step and their operations."""
