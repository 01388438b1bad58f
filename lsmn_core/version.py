"""The version of lsmn_core, recorded in every run (pyproject.toml holds the same)."""

__version__ = "0.1.0"
