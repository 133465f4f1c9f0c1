"""Where the runs of a sweep execute: in process, in a process pool, or on Ray.

A :class:`Task` is one experiment on one config — or on several configs trained as one ensemble
(see ``Experiment.run_batch``). Every backend runs :func:`execute_task` on its tasks and yields
``(task index, [PointResult, …])`` as tasks finish; workers never touch the store, the driver
(:mod:`implicitlab.sweep.driver`) writes every result.

- ``local``: in this process, one task after another (the driver calls :func:`execute_task`).
- ``process``: a ``ProcessPoolExecutor`` (spawn context; each worker sets 1 torch thread and exits
  when the driver dies). A worker killed mid-task breaks the pool; the unfinished tasks are
  resubmitted to a fresh pool, at most ``max_retries`` times.
- ``ray``: Ray tasks (1 CPU each, ``max_retries`` on worker death). Without an address a local
  Ray starts with ``num_cpus=workers``, no dashboard, every server on loopback, its temporary files
  under the results folder; it is shut down when the sweep ends, also on Ctrl-C. With an address
  the sweep joins that cluster (``ray start --head`` prints it) and only disconnects at the end;
  an address on 127.0.0.1 is a loopback cluster (see :func:`ray_start`) and the driver binds
  127.0.0.1 too. Each result records the Ray node that ran it (``environment["ray_node_id"]``).
"""

from __future__ import annotations

import functools
import importlib.util
import contextlib
import ipaddress
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import ConfigError
from ..environment import environment
from ..experiments import Experiment
from ..train import fused_chain

BACKENDS = ("local", "process", "ray")


@dataclass(frozen=True)
class Task:
    """One experiment on ``configs`` (several: trained as one ensemble via ``run_batch``)."""

    experiment: Experiment
    configs: tuple[Any, ...]
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads in the worker (None: leave as is)


@dataclass
class PointResult:
    """What a worker sends back for one point; the driver stores it."""

    status: str  # "ok" | "failed"
    table: pd.DataFrame | None
    claims: list[dict] | None
    environment: dict
    wall_time_s: float
    error: str | None = None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())


def failed_results(task: Task, error: str, env: dict | None = None, wall: float = 0.0) -> list[PointResult]:
    return [PointResult("failed", None, None, env or {}, wall, error) for _ in task.configs]


@functools.lru_cache(maxsize=8)
def _environment(device: str, threads: int) -> dict:
    # Once per process: the code a process runs is the code it imported, and asking git costs
    # two subprocesses (~10 ms) — more than a tiny run.
    return {**environment(device), "chain_kernel": fused_chain.status()}  # which path small chains took


def execute_task(task: Task, progress: Callable[[float], None] | None = None) -> list[PointResult]:
    """Run a task and derive the claims of each point; an exception fails the task's points."""
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    exp, cfgs, n = task.experiment, list(task.configs), len(task.configs)
    device = torch.device(task.device)
    env = dict(_environment(str(device), torch.get_num_threads()))
    start = time.perf_counter()
    try:
        if n == 1:
            tables = [exp.run(cfgs[0], device=device, progress=progress)]
        else:
            if exp.run_batch is None:
                raise ValueError(f"experiment {exp.name!r} cannot batch runs")
            tables = list(exp.run_batch(cfgs, device=device, progress=progress))
            if len(tables) != n:
                raise RuntimeError(f"run_batch returned {len(tables)} tables for {n} configs")
        claims: list[list[dict] | BaseException] = []
        for table in tables:
            try:
                claims.append([c.to_dict() for c in exp.claims(table)])
            except Exception as exc:  # a point whose claims fail is a failed point
                claims.append(exc)
    except Exception as exc:
        return failed_results(task, _one_line(exc), env, (time.perf_counter() - start) / n)
    wall = time.perf_counter() - start
    if n > 1:
        env = {**env, "batched_runs": n, "batch_wall_time_s": wall}
    out = []
    for table, c in zip(tables, claims):
        if isinstance(c, BaseException):
            out.append(PointResult("failed", None, None, env, wall / n, _one_line(c)))
        else:
            out.append(PointResult("ok", table, c, env, wall / n))
    return out


Results = Iterator[tuple[int, list[PointResult]]]


# --------------------------------------------------------------------------- process pool


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # the driver died (e.g. SIGKILL): don't linger as an orphan
            os._exit(1)
        time.sleep(0.5)


def _init_worker(parent: int) -> None:
    torch.set_num_threads(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def run_process_pool(tasks: list[Task], workers: int, max_retries: int = 1) -> Results:
    """Tasks on a spawn-context process pool; a dead worker costs a pool restart (≤ ``max_retries``)."""
    pending = dict(enumerate(tasks))
    restarts = 0
    while pending:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                   initializer=_init_worker, initargs=(os.getpid(),))
        broken = False
        try:
            futures = {pool.submit(execute_task, task): i for i, task in pending.items()}
            waiting = set(futures)
            while waiting and not broken:
                done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for fut in done:
                    try:
                        results = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    i = futures[fut]
                    del pending[i]
                    yield i, results
        finally:
            pool.shutdown(wait=not broken and not pending, cancel_futures=True)
        if broken:
            restarts += 1
            if restarts > max_retries:
                for i in sorted(pending):
                    yield i, failed_results(pending[i], "a worker process died (pool restarted "
                                            f"{max_retries} times)")
                return


# --------------------------------------------------------------------------- Ray


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def _user_sys_path() -> list[str]:
    """Entries of sys.path a fresh interpreter would lack (test helpers, user folders)."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out = []
    for p in sys.path:
        if not p or not os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if not any(real == pre or real.startswith(pre + os.sep) for pre in prefixes):
            out.append(real)
    return out


# Unix socket paths are limited to 107 bytes; Ray puts them ~64 characters below its temp dir.
_MAX_RAY_TEMP_DIR = 40


@dataclass
class _RaySession:
    ray: Any
    link_dir: str | None = None
    temp_dir: Path | None = None

    def close(self) -> None:
        self.ray.shutdown()
        if self.link_dir is not None:
            shutil.rmtree(self.link_dir, ignore_errors=True)  # the short link, not the files it points to
            latest = self.temp_dir / "session_latest"  # pointed through the link: point it at the folder
            if latest.is_symlink():
                target = os.path.basename(os.readlink(latest))
                latest.unlink()
                latest.symlink_to(target)


LOOPBACK = "127.0.0.1"
"""The one address at which Ray's servers listen on loopback only: Ray compares the node IP with this
string to decide whether a gRPC server binds loopback or every interface."""


@contextlib.contextmanager
def _keep_loopback() -> Iterator[None]:
    """Inside: Ray takes 127.0.0.1 as given instead of replacing it by this machine's routable address.

    Ray 2.60 maps every "localhost" address it is handed (``--node-ip-address``, ``--address``,
    ``ray.init(address=)``) to the address this machine reaches the internet from
    (``ray._private.services.resolve_ip_for_localhost``), so a cluster started "on 127.0.0.1" listens on
    every interface and a driver looks for it on the routable address. This is the only change.
    """
    from ray._private import services

    resolve = services.resolve_ip_for_localhost

    def keep(host: str) -> str:
        return host if host == LOOPBACK else resolve(host)

    services.resolve_ip_for_localhost = keep
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = resolve


def ray_start(args: Sequence[str]) -> int:
    """Ray's own ``ray start`` with ``args``, 127.0.0.1 kept as given; returns its exit status.

    ``args`` are those of ``ray start`` (``start`` itself not included). For a cluster on this
    machine's loopback — a head, then a second node (each with its own ``--temp-dir``)::

        python -c 'import sys; from implicitlab.sweep.backends import ray_start; sys.exit(ray_start(sys.argv[1:]))' \\
            --head --node-ip-address=127.0.0.1 --port=PORT --temp-dir=DIR …
        python -c '…the same…' --address=127.0.0.1:PORT --node-ip-address=127.0.0.1 --temp-dir=DIR2 …

    ``ray start`` itself, given the same flags, binds the machine's routable address instead (see
    :func:`_keep_loopback`). The Ray processes it starts outlive this call, as with ``ray start``.
    """
    if not ray_available():
        raise ConfigError("ray_start needs Ray: pip install -c constraints.txt 'implicitlab[ray]'")
    import click
    from ray.scripts.scripts import cli

    with _keep_loopback():
        try:
            cli.main(args=["start", *args], prog_name="ray", standalone_mode=False)
        except click.ClickException as exc:  # bad flags: reported as ``ray start`` reports them
            exc.show()
            return exc.exit_code
    return 0


def start_ray(workers: int, address: str | None, temp_dir: Path) -> _RaySession:
    """Join the cluster at ``address``, or start a loopback-only local Ray (see module docstring).

    The session's ``close()`` shuts down what this call started (or disconnects from a cluster).
    """
    if not ray_available():
        raise ConfigError("the ray backend needs Ray: pip install -c constraints.txt 'implicitlab[ray]'")
    if address is not None:
        import ray

        host, _, port = address.rpartition(":")
        if host not in (LOOPBACK, "localhost"):
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            return _RaySession(ray)
        # A cluster on this machine's loopback (see ray_start): reach it on 127.0.0.1 and bind there.
        session = _RaySession(ray)
        with _keep_loopback():
            ray.init(address=f"{LOOPBACK}:{port}", logging_level=logging.WARNING, log_to_driver=False)
        try:
            node_ip = ray.util.get_node_ip_address()
            if node_ip != LOOPBACK:  # a cluster started by plain `ray start`: it listens on node_ip
                raise RuntimeError(f"the Ray cluster at {address} runs on {node_ip}, not on loopback only; "
                                   f"refusing to run (to join it anyway, give --ray-address {node_ip}:{port}; "
                                   "for a loopback cluster start its nodes with implicitlab.sweep.backends.ray_start)")
        except BaseException:
            session.close()
            raise
        return session

    # Before Ray is imported: take the loopback address as this node's IP, so every Ray server
    # (GCS, raylet, workers, agents) binds 127.0.0.1 instead of a routable interface.
    previous = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    was_cluster = getattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before this call
    temp_dir = temp_dir.resolve()
    temp_dir.mkdir(parents=True, exist_ok=True)
    link_dir = None
    ray_temp = str(temp_dir)
    if len(ray_temp) > _MAX_RAY_TEMP_DIR:  # a short symlink to the folder keeps socket paths legal
        link_dir = tempfile.mkdtemp(prefix="il-ray-")
        os.symlink(temp_dir, os.path.join(link_dir, "t"))
        ray_temp = os.path.join(link_dir, "t")
    session = _RaySession(ray, link_dir, temp_dir)
    try:
        paths = _user_sys_path()
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        ray.init(
            address="local",
            num_cpus=workers,
            include_dashboard=False,
            _temp_dir=ray_temp,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}} if paths else None,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        node_ip = ray.util.get_node_ip_address()
        if not ipaddress.ip_address(node_ip).is_loopback:
            raise RuntimeError(f"local Ray came up on {node_ip}, not loopback; refusing to run")
    except BaseException:
        session.close()
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = was_cluster
        if previous is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = previous
    return session


def _execute_task_on_ray(task: Task) -> list[PointResult]:
    """:func:`execute_task`, each result's environment naming the Ray node that ran it."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    results = execute_task(task)
    for res in results:
        res.environment = {**res.environment, "ray_node_id": node}
    return results


def run_ray(tasks: list[Task], workers: int, temp_dir: Path, address: str | None = None,
            max_retries: int = 3) -> Results:
    """Tasks as Ray tasks; results come back to this (driver) process as they finish."""
    session = start_ray(workers, address, temp_dir)
    ray = session.ray
    try:
        remote = ray.remote(num_cpus=1, max_retries=max_retries)(_execute_task_on_ray)
        refs = {remote.remote(Task(t.experiment, t.configs, t.device, 1)): i for i, t in enumerate(tasks)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            if pending:  # collect whatever else has finished, without waiting
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                done += more
            for ref in done:
                i = refs.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as exc:  # retries exhausted, node lost, …
                    results = failed_results(tasks[i], _one_line(exc))
                yield i, results
    finally:
        session.close()
