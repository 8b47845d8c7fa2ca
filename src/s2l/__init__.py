"""s2l: choose fine-tuning data for a large model from a small proxy's training trajectories."""

__version__ = "0.1.0"
