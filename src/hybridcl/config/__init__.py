"""Configuration: the experiment's dataclasses, presets, overrides and sweeps."""
