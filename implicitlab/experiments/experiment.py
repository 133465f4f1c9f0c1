"""The Experiment record: a config type, presets, ``run``, ``plot`` and ``claims`` (experiments as data).

The list of experiments is in :mod:`implicitlab.experiments` (``__init__.py``)."""

from __future__ import annotations

import dataclasses
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

    Ensemble batching (optional). An experiment whose runs an ensemble can carry side by side
    declares ``batch_fields`` — config fields that may differ between runs trained together (a
    seed, an init scale, a step size) — and ``run_batch(cfgs, device=..., progress=...) ->
    list[DataFrame]``, which trains configs that differ *only* in those fields as one ensemble and
    returns one table per config, in order, each the table ``run`` returns for that config alone.
    A sweep then trains such points together. Experiments whose config already carries tuple
    fields (``lrs``, ``init_scales``) get ``run_batch`` from :func:`merged_run_batch`.
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
    batch_fields: tuple[str, ...] = ()
    run_batch: Callable[..., list[pd.DataFrame]] | None = None

    def __post_init__(self) -> None:
        if bool(self.batch_fields) != (self.run_batch is not None):
            raise ValueError(f"experiment {self.name!r}: give batch_fields and run_batch together")
        known = {f.name for f in dataclasses.fields(self.config_type)}
        unknown = [f for f in self.batch_fields if f not in known]
        if unknown:
            raise ValueError(f"experiment {self.name!r}: batch_fields {unknown} are not config fields")

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


def merged_run_batch(run: Callable[..., pd.DataFrame], columns: dict[str, str]) -> Callable[..., list[pd.DataFrame]]:
    """``run_batch`` for a config whose tuple fields already hold many runs (``lrs``, ``seeds``).

    ``columns`` maps each batchable tuple field to the table column that names a row's value
    (``{"lrs": "lr", "init_scales": "init_scale"}``). The batch runs once on a config whose tuple
    fields carry every value of every config (first-seen order, duplicates dropped); config i then
    gets the rows whose columns hold one of *its* values. Right when the runs of the merged config
    are independent of each other — which is what declaring a field batchable asserts.
    """

    def run_batch(cfgs: list[Any], *, device: torch.device = torch.device("cpu"), progress=None):
        merged = {f: tuple(dict.fromkeys(v for c in cfgs for v in getattr(c, f))) for f in columns}
        table = run(dataclasses.replace(cfgs[0], **merged), device=device, progress=progress)
        out = []
        for c in cfgs:
            mask = pd.Series(True, index=table.index)
            for f, col in columns.items():
                mask &= table[col].isin(list(getattr(c, f)))
            out.append(table[mask].reset_index(drop=True))
        return out

    return run_batch
