"""Experiments as data: a config type, presets, ``run``, ``plot`` and ``claims``; and the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from ..config import ConfigError
from .claims import Claim

Progress = Callable[[float], None]
"""Called with the fraction of the experiment done, in [0, 1]."""


@dataclass(frozen=True)
class Experiment:
    """A named, declared experiment.

    ``run(cfg, device=..., progress=...) -> DataFrame`` is pure (no files, no globals);
    ``plot(table) -> Figure`` and ``claims(table) -> list[Claim]`` read only the table.
    """

    name: str
    title: str
    paper: str
    config_type: type
    presets: dict[str, Any]
    run: Callable[..., pd.DataFrame]
    plot: Callable[[pd.DataFrame], Figure]
    claims: Callable[[pd.DataFrame], list[Claim]]
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def preset(self, name: str) -> Any:
        try:
            return self.presets[name]
        except KeyError:
            raise ConfigError(
                f"experiment {self.name!r} has no preset {name!r}; presets: {', '.join(self.presets)}"
            ) from None

    def execute(self, cfg: Any, device: torch.device | str = "cpu", progress: Progress | None = None):
        """Run, then derive the claims: returns ``(table, claims)``."""
        table = self.run(cfg, device=torch.device(device), progress=progress)
        return table, self.claims(table)


_REGISTRY: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    if exp.name in _REGISTRY:
        raise ValueError(f"experiment {exp.name!r} registered twice")
    _REGISTRY[exp.name] = exp
    return exp


def _load_all() -> None:
    # Importing the modules registers their experiments.
    from . import poggio2018, soudry2018  # noqa: F401


def experiments() -> dict[str, Experiment]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Experiment:
    exps = experiments()
    if name not in exps:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(exps)}")
    return exps[name]
