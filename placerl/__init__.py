"""placerl: RLHF and preference optimization with placement as a first-class choice."""

__version__ = "0.1.0"
