"""The Experiment record: a config type, presets, ``run``, ``plot`` and ``claims`` (experiments as data).

An experiment either trains (``run``) or is a *view*: another figure of the runs of a named
experiment (``view_of``), computed from that experiment's table by ``derive`` — Marion & Chizat's
Fig. 3 is the divergence probability of Fig. 1's runs. A view never trains; whoever executes one
runs or reuses its source on the same config first (:func:`implicitlab.runner.run_experiment`,
:func:`implicitlab.check.check`), and a sweep refuses it (sweep its source instead).

The list of experiments is in :mod:`implicitlab.experiments` (``__init__.py``); :func:`check_views`
checks the views of that list against their sources."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from ..config import ConfigError
from .claims import Claim, Threshold

Progress = Callable[[float], None]
"""Called with the fraction of the experiment done, in [0, 1]."""


@dataclass(frozen=True)
class Experiment:
    """A named, declared experiment.

    ``run(cfg, device=..., progress=...) -> DataFrame`` is pure (no files, no globals);
    ``plot(table) -> Figure`` and ``claims(table) -> list[Claim]`` read only the table.

    A view (``view_of``, the name of another experiment, and ``derive``, with ``run=None``) trains
    nothing: ``derive(source_table, cfg) -> DataFrame`` makes its table from the table its source
    returns for the same config ``cfg``, so a view has its source's config type and presets (and
    declares no batching). ``derive`` is pure and cheap; the source's runs are the only training.

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
    run: Callable[..., pd.DataFrame] | None  # None for a view
    plot: Callable[[pd.DataFrame], Figure]
    claims: Callable[[pd.DataFrame], list[Claim]]
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    batch_fields: tuple[str, ...] = ()
    run_batch: Callable[..., list[pd.DataFrame]] | None = None
    view_of: str | None = None  # a view: the experiment whose runs it reads
    derive: Callable[[pd.DataFrame, Any], pd.DataFrame] | None = None  # a view: (source table, cfg) -> table
    # memory a run of cfg needs at its peak, in bytes, where the config says (None: the config type's own
    # ``estimate_bytes()`` method, if it has one); checked by the CLI before a run (see needed_bytes)
    estimate_bytes: Callable[[Any], int] | None = None
    # every number a verdict depends on, with its source (paper / exact / ours: why): shown in the report
    thresholds: dict[str, Threshold] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.view_of is None) != (self.derive is None):
            raise ValueError(f"experiment {self.name!r}: give view_of and derive together")
        if self.view_of is not None and (self.run is not None or self.run_batch is not None):
            raise ValueError(f"experiment {self.name!r} is a view of {self.view_of!r}: it has no run or run_batch")
        if self.view_of is None and self.run is None:
            raise ValueError(f"experiment {self.name!r}: give run (or view_of and derive)")
        if self.view_of == self.name:
            raise ValueError(f"experiment {self.name!r} cannot be a view of itself")
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

    def needed_bytes(self, cfg: Any) -> int | None:
        """Estimated peak memory (bytes) of running ``cfg``: ``estimate_bytes(cfg)``, else the config's own
        ``cfg.estimate_bytes()``, else None (not known from the config)."""
        if self.estimate_bytes is not None:
            return int(self.estimate_bytes(cfg))
        method = getattr(cfg, "estimate_bytes", None)
        return int(method()) if callable(method) else None

    def memory_note(self, cfg: Any) -> str:
        """What the memory estimate grows with: the config's ``MEMORY_FIELDS``, if it names them."""
        fields = getattr(cfg, "MEMORY_FIELDS", ())
        return f"it grows with {', '.join(fields)}" if fields else "estimated from the config"

    @property
    def is_view(self) -> bool:
        """Whether this experiment reads the runs of another (``view_of``) instead of training."""
        return self.view_of is not None

    def execute(self, cfg: Any, device: torch.device | str = "cpu", progress: Progress | None = None, *,
                source_table: pd.DataFrame | None = None):
        """Run (a view: derive from ``source_table``, its source's table for ``cfg``), then derive the
        claims: returns ``(table, claims)``."""
        if self.view_of is None:
            if source_table is not None:
                raise ValueError(f"experiment {self.name!r} is not a view: it takes no source table")
            table = self.run(cfg, device=torch.device(device), progress=progress)
        else:
            if source_table is None:
                raise ValueError(f"experiment {self.name!r} is a view of {self.view_of!r}: give the table "
                                 f"{self.view_of!r} returns for this config (source_table)")
            table = self.derive(source_table, cfg)
            if progress:
                progress(1.0)
        return table, self.claims(table)


def check_views(experiments: dict[str, Experiment]) -> None:
    """Every view reads a listed experiment that trains, with the view's config type and presets.

    Raises ValueError naming the first view that does not.
    """
    for exp in experiments.values():
        if exp.view_of is None:
            continue
        source = experiments.get(exp.view_of)
        if source is None:
            raise ValueError(f"experiment {exp.name!r} is a view of {exp.view_of!r}, which is not listed")
        if source.view_of is not None:
            raise ValueError(f"experiment {exp.name!r} is a view of {source.name!r}, itself a view")
        if exp.config_type is not source.config_type or exp.presets != source.presets:
            raise ValueError(f"experiment {exp.name!r} needs the config type and presets of its source "
                             f"{source.name!r}")


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
