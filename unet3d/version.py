"""The package version, in one place: `setup.py` reads it from this file, and the log banner, plans and exported
models record it."""

__version__ = "0.1.0"
