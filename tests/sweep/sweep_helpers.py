"""Test experiments for sweeps (importable by worker processes; ``conftest.py`` adds them to the list).

- ``test-worker``: one cheap table per config, with knobs for the failure modes a sweep must
  survive: ``sleep`` (slow points), ``fail_unless`` (raises until a file exists), ``kill_once``
  (the worker SIGKILLs itself the first time, remembered by a marker file).
- ``test-tuple-batch``: a config whose tuple fields hold many runs, batched by
  :func:`merged_run_batch` (merge the tuples, run once, split the table by columns).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from implicitlab.experiments import Claim, Experiment, merged_run_batch


def _value(seed: int, x: float, step: int) -> float:
    return float(np.sin(seed + 1.0) * x / (1.0 + step))


@dataclass(frozen=True)
class WorkerConfig:
    seed: int = 0
    x: float = 1.0
    steps: int = 3
    sleep: float = 0.0  # seconds per run
    fail_unless: str = ""  # raise unless this file exists
    kill_once: str = ""  # SIGKILL the worker unless this marker exists (then create it first)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")


def run_worker(cfg: WorkerConfig, *, device=None, progress=None) -> pd.DataFrame:
    if cfg.kill_once and not Path(cfg.kill_once).exists():
        Path(cfg.kill_once).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.fail_unless and not Path(cfg.fail_unless).exists():
        raise RuntimeError(f"{cfg.fail_unless} is missing")
    time.sleep(cfg.sleep)
    steps = np.arange(cfg.steps)
    if progress:
        progress(1.0)
    return pd.DataFrame({"step": steps, "value": [_value(cfg.seed, cfg.x, s) for s in steps], "pid": os.getpid()})


def plot_any(table: pd.DataFrame):
    fig, ax = plt.subplots()
    ax.plot(table.iloc[:, 0], table.iloc[:, 1])
    return fig


def claims_worker(table: pd.DataFrame) -> list[Claim]:
    return [Claim("finite", "values are finite", "test", float(np.isfinite(table["value"]).mean()), ">=", 1.0,
                  basis="fraction of finite values")]


@dataclass(frozen=True)
class TupleConfig:
    lrs: tuple[float, ...] = (0.1,)
    seeds: tuple[int, ...] = (0,)
    steps: int = 4


def run_tuple(cfg: TupleConfig, *, device=None, progress=None) -> pd.DataFrame:
    if progress:
        progress(1.0)
    rows = [(lr, s, t, _value(s, lr, t)) for lr in cfg.lrs for s in cfg.seeds for t in range(cfg.steps)]
    return pd.DataFrame(rows, columns=["lr", "seed", "step", "value"])


def claims_tuple(table: pd.DataFrame) -> list[Claim]:
    return [Claim("rows", "one row per run and step", "test", float(len(table)), ">=", 1.0, basis="rows")]


WORKER = Experiment(
    name="test-worker", title="test", paper="test", config_type=WorkerConfig,
    presets={"tiny": WorkerConfig(), "quick": WorkerConfig(), "full": WorkerConfig()},
    run=run_worker, plot=plot_any, claims=claims_worker, tags=("demo",),
)
TUPLE_BATCH = Experiment(
    name="test-tuple-batch", title="test", paper="test", config_type=TupleConfig,
    presets={"tiny": TupleConfig(), "quick": TupleConfig(), "full": TupleConfig()},
    run=run_tuple, plot=plot_any, claims=claims_tuple, tags=("demo",),
    batch_fields=("lrs", "seeds"), run_batch=merged_run_batch(run_tuple, {"lrs": "lr", "seeds": "seed"}),
)
TEST_EXPERIMENTS = (WORKER, TUPLE_BATCH)
