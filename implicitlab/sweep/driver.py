"""Run the points of a sweep: skip what is done, batch what can share an ensemble, store each result.

The driver is the only writer: backends hand back results and each point becomes one store row in
one transaction (``Store.write_run(unique_ok=True)``), so a sweep killed at any instant and rerun
ends with every point stored exactly once. A point with an ``ok`` run is skipped; a point whose
runs all failed is rerun only with ``retry_failed``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import ConfigError, config_to_dict, resolve_device
from .backends import BACKENDS, Task, execute_task, ray_available, run_process_pool, run_ray
from .export import tidy_table
from .grid import Point
from .store import Store, store_path

SweepProgress = Callable[[float, int], None]
"""Called as ``progress(points_done, points_total)``; ``points_done`` may be fractional."""



@dataclass
class SweepReport:
    """What a sweep did: counts, and the run id of every point (done before or now)."""

    store: Store
    total: int
    skipped: int = 0
    skipped_failed: int = 0  # of the skipped: points whose stored runs all failed (no retry asked)
    ok: int = 0
    failed: int = 0
    tasks: int = 0
    wall_time_s: float = 0.0
    run_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every point has an ok run."""
        return self.failed == 0 and self.skipped_failed == 0

    def table(self, metrics: list[str] | None = None) -> pd.DataFrame:
        """The tidy table of this sweep's ok runs: run id, config fields, metric columns."""
        return tidy_table(self.store, metrics=metrics, run_ids=list(self.run_ids.values()))


def plan_tasks(points: list[Point], *, device: str, batch: bool = True, batch_size: int = 256,
               threads: int | None = None) -> list[tuple[Task, list[Point]]]:
    """Group points that differ only in their experiment's ``batch_fields`` into ensembles.

    A group of m points becomes ⌈m / batch_size⌉ tasks of near-equal size. The split depends only
    on the points and ``batch_size``, never on the backend or the number of workers, so the same
    sweep trains the same ensembles everywhere.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        exp = p.experiment
        if batch and exp.run_batch is not None:
            rest = {k: v for k, v in config_to_dict(p.config).items() if k not in exp.batch_fields}
            key = (exp.name, json.dumps(rest, sort_keys=True))
        else:
            key = (exp.name, p.config_hash)
        groups.setdefault(key, []).append(p)
    tasks = []
    for members in groups.values():
        chunks = math.ceil(len(members) / batch_size)
        bounds = [round(k * len(members) / chunks) for k in range(chunks + 1)]  # sizes differ by ≤ 1
        for lo, hi in zip(bounds, bounds[1:]):
            part = members[lo:hi]
            tasks.append((Task(part[0].experiment, tuple(p.config for p in part), device, threads), part))
    return tasks


def run_sweep(
    points: list[Point],
    *,
    out: str | Path = "results",
    backend: str | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    retry_failed: bool = False,
    fresh: bool = False,
    batch: bool = True,
    batch_size: int = 256,
    device: str = "cpu",
    max_retries: int | None = None,
    progress: SweepProgress | None = None,
) -> SweepReport:
    """Run every point not yet done; return a :class:`SweepReport`.

    Args:
        points: from :func:`~implicitlab.sweep.grid.expand` or :func:`~implicitlab.sweep.grid.points_for`.
        out: results folder; the store is ``out/implicitlab.sqlite``, a local Ray's files ``out/.ray``.
        backend: ``"local"``, ``"process"`` or ``"ray"`` (default: local for 1 worker, else process).
        workers: processes (``process``) or CPUs (a local ``ray``).
        ray_address: join this Ray cluster instead of starting a local one.
        retry_failed: rerun points whose stored runs all failed.
        fresh: run every point again, stored or not (new runs are appended; lookups by key take
            the newest ``ok`` run, so later reuse finds these).
        batch / batch_size: train points that differ only in batchable fields as ensembles of at
            most ``batch_size`` runs (experiments that declare ``run_batch``).
        device: ``cpu``, ``cuda[:N]`` or ``auto``, for every run.
        max_retries: re-executions of a task whose worker died (default 3 on Ray, 1 pool restart).
        progress: ``progress(points_done, points_total)`` as points finish.
    """
    backend = backend or ("local" if workers == 1 and ray_address is None else
                          "ray" if ray_address is not None else "process")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise ConfigError(f"workers must be ≥ 1, got {workers}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    if ray_address is not None and backend != "ray":
        raise ConfigError("--ray-address needs the ray backend")
    if backend == "ray" and not ray_available():
        raise ConfigError("the ray backend needs Ray: pip install -c constraints.txt 'implicitlab[ray]'")
    dev = str(resolve_device(device))
    out = Path(out)
    start = time.perf_counter()

    store = Store(store_path(out))
    report = SweepReport(store=store, total=len(points))
    todo = []
    statuses: dict[str, dict[str, str]] = {}
    for p in points:
        done = statuses.setdefault(p.experiment.name, store.statuses(p.experiment.name)).get(p.config_hash)
        if not fresh and (done == "ok" or (done == "failed" and not retry_failed)):
            report.skipped += 1
            report.skipped_failed += done == "failed"
        else:
            todo.append(p)
    if report.skipped:
        todo_keys = {p.key for p in todo}
        report.run_ids.update(_existing_ids(store, [p for p in points if p.key not in todo_keys]))
    threads = 1 if backend != "local" else None
    plan = plan_tasks(todo, device=dev, batch=batch, batch_size=batch_size, threads=threads)
    report.tasks = len(plan)
    tasks = [t for t, _ in plan]
    if progress:
        progress(report.skipped, report.total)

    if backend == "local":
        current = {"n": 0}

        def partial(fraction: float) -> None:
            if progress:
                done = report.skipped + report.ok + report.failed
                progress(done + current["n"] * min(max(fraction, 0.0), 1.0), report.total)

        def local_results():
            for i, task in enumerate(tasks):
                current["n"] = len(task.configs)
                yield i, execute_task(task, partial)

        results = local_results()
    elif backend == "process":
        results = run_process_pool(tasks, workers, max_retries=1 if max_retries is None else max_retries)
    else:
        results = run_ray(tasks, workers, out / ".ray", address=ray_address,
                          max_retries=3 if max_retries is None else max_retries)

    try:
        _store_results(store, plan, results, report, progress, fresh)
    finally:
        results.close()  # stops a pool / shuts Ray down now, also on Ctrl-C
    report.wall_time_s = time.perf_counter() - start
    return report


def _store_results(store, plan, results, report, progress, fresh: bool = False) -> None:
    """Write each point's result in its own transaction, as tasks finish."""
    for i, point_results in results:
        for p, res in zip(plan[i][1], point_results):
            run_id = store.write_run(
                experiment=p.experiment.name, preset=p.preset, config=config_to_dict(p.config),
                config_hash=p.config_hash, status=res.status, environment=res.environment,
                wall_time_s=res.wall_time_s, table=res.table, claims=res.claims, error=res.error,
                unique_ok=not fresh,
            )
            if res.status == "ok":
                report.ok += 1
                report.run_ids[p.key] = run_id
            else:
                report.failed += 1
                report.errors[p.key] = res.error or ""
        if progress:
            progress(report.skipped + report.ok + report.failed, report.total)


def _existing_ids(store: Store, points: list[Point]) -> dict[tuple[str, str], int]:
    wanted = {p.key for p in points}
    ids: dict[tuple[str, str], int] = {}
    for rec in store.records(status="ok"):  # oldest first: the newest ok run of a key wins
        key = (rec["experiment"], rec["config_hash"])
        if key in wanted:
            ids[key] = rec["id"]
    return ids
