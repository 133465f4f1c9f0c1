"""Runs and their storage (sweeps over grids come with the sweep backends)."""

from .store import Store

__all__ = ["Store"]
