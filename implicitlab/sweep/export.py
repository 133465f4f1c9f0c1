"""Stored runs as one tidy table for pandas: run id, experiment, config fields, metric columns.

One row per row of each run's results table (e.g. per probed step). Config fields that are lists
are written as JSON text. A config field named like a chosen metric column becomes
``config_<name>``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..config import ConfigError
from ..experiments import experiments
from .store import Store

FORMATS = ("csv", "parquet")


def tidy_table(
    store: Store,
    *,
    metrics: list[str] | None = None,
    experiment: str | None = None,
    keys: Iterable[tuple[str, str]] | None = None,
    run_ids: Iterable[int] | None = None,
) -> pd.DataFrame:
    """The ``ok`` runs of ``store`` (optionally of one experiment, of some (experiment, config_hash)
    keys, or some run ids) with their config fields and the ``metrics`` columns (default: all)."""
    records = store.records(status="ok", experiment=experiment)
    if keys is not None:
        wanted = set(keys)
        records = [r for r in records if (r["experiment"], r["config_hash"]) in wanted]
    if run_ids is not None:
        ids = set(run_ids)
        records = [r for r in records if r["id"] in ids]
    frames = []
    for rec in records:
        table = store.table(rec["id"])
        cols = list(metrics) if metrics else list(table.columns)
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise ConfigError(f"run {rec['id']} ({rec['experiment']}) has no column {missing[0]!r}; "
                              f"its columns: {', '.join(map(str, table.columns))}")
        meta = {"run_id": rec["id"], "experiment": rec["experiment"]}
        for name, value in ordered_config(rec["experiment"], rec["config"]).items():
            column = f"config_{name}" if name in cols or name in meta else name
            meta[column] = json.dumps(value) if isinstance(value, (list, dict)) else value
        body = table[cols].reset_index(drop=True)
        head = pd.DataFrame({k: [v] * len(body) for k, v in meta.items()}, index=body.index)
        frames.append(pd.concat([head, body], axis=1))
    if not frames:
        return pd.DataFrame(columns=["run_id", "experiment", *(metrics or [])])
    return pd.concat(frames, ignore_index=True)


def ordered_config(experiment: str, config: dict) -> dict:
    """A stored config (keys sorted) in its dataclass's field order, when the experiment is known."""
    exp = experiments().get(experiment)
    if exp is None:
        return config
    order = [f.name for f in dataclasses.fields(exp.config_type)]
    return {**{k: config[k] for k in order if k in config}, **config}


def write_table(table: pd.DataFrame, path: str | Path, fmt: str = "csv") -> Path:
    """Write ``table`` as CSV or Parquet (Parquet needs pyarrow: the ``parquet`` extra)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError("parquet needs pyarrow: pip install -c constraints.txt 'implicitlab[parquet]'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    return path
