"""Sweep throughput: 200 tiny runs serial vs process pool vs Ray, and the same 200 as one ensemble.

Every mode is a complete ``run_sweep`` into a fresh results folder, timed end to end in this
process: planning, pool or Ray start-up, training, claims, and one store transaction per run. The
runs are ``sweep-demo`` (tiny preset: depth-2 linear regression, 300 GD steps) over init scales ×
step sizes × seeds — points that differ only in batchable fields, so the last mode trains them as
one ensemble. The four stored tables are checked to be identical.

"ratio" is serial wall time over the mode's; "runs/s after it" excludes start-up (pool spawn, Ray
start), the rate a long sweep approaches.

Usage: ``python benchmarks/sweep.py [--points 200] [--workers 2] [--no-ray]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from implicitlab.sweep import expand, parse_spec, run_sweep
from implicitlab.sweep.backends import ray_available

SCALES = [0.005, 0.01, 0.02, 0.05]
LRS = [0.05, 0.1]


def points(n: int):
    per_seed = len(SCALES) * len(LRS)
    seeds = -(-n // per_seed)
    pts = expand(parse_spec({"experiment": "sweep-demo", "preset": "tiny",
                             "grid": {"init_scale": SCALES, "lr": LRS}, "seeds": list(range(seeds))}))
    return pts[:n]


def timed(pts, root: Path, name: str, **kw) -> tuple[float, float, pd.DataFrame]:
    """Wall time, time to the first stored result, and the sweep's table."""
    start = time.perf_counter()
    first = []

    def progress(done, total):
        if done >= 1 and not first:
            first.append(time.perf_counter() - start)

    report = run_sweep(pts, out=root / name, progress=progress, **kw)
    wall = time.perf_counter() - start
    assert report.ok == len(pts), report.errors
    key = ["init_scale", "lr", "seed", "step"]
    table = report.table().drop(columns="run_id").sort_values(key).reset_index(drop=True)
    return wall, first[0] if first else wall, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray mode")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pts = points(args.points)

    modes = [
        ("serial, one run at a time", dict(backend="local", batch=False)),
        (f"process pool, {args.workers} workers", dict(backend="process", workers=args.workers, batch=False)),
    ]
    if ray_available() and not args.no_ray:
        modes.append((f"local Ray, num_cpus={args.workers}", dict(backend="ray", workers=args.workers, batch=False)))
    modes.append((f"one ensemble of {len(pts)} runs", dict(backend="local", batch=True, batch_size=len(pts))))

    with tempfile.TemporaryDirectory(prefix="il-bench-") as tmp:
        root = Path(tmp)
        timed(points(8), root, "warm-up", backend="local", batch=False)  # imports, first-call costs
        results = [(label, *timed(pts, root, f"mode{i}", **kw)) for i, (label, kw) in enumerate(modes)]

    serial = results[0][1]
    same = all(t.equals(results[0][3]) for *_, t in results)
    print(f"{len(pts)} sweep-demo tiny runs (300 GD steps each), torch {torch.__version__}, 1 torch thread per "
          f"process, {os.cpu_count()} CPU cores; wall time includes start-up and one store write per run")
    print(f"{'':<32}  {'wall':>8}  {'ratio':>7}  {'runs/s':>7}  {'first result':>12}  {'runs/s after it':>15}")
    for label, wall, first, _ in results:
        steady = (len(pts) - 1) / (wall - first) if wall > first else float("nan")
        print(f"{label:<32}  {wall:7.2f}s  {serial / wall:6.1f}x  {len(pts) / wall:7.1f}  {first:11.2f}s  {steady:15.1f}")
    print(f"stored tables identical across modes: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
