"""Data-parallel scaling, measured: the sharpness of the Poggio CNN on CIFAR-10 with 1 and 2 processes.

The problem: Poggio et al.'s Fig. 1 net (``poggio_fig1_net``: five 3×3 stride-2 convolutions of 16
channels, ReLU, linear 16 → 10; 9,898 parameters, float64) at its seeded initialisation, on a
class-balanced subset of ``--num-images`` CIFAR-10 training images (seed 0, standardised per channel, as
``implicitlab measure --data cifar10:train:N`` builds it), mean cross-entropy. For each W in
``--nprocs`` the script launches itself under torchrun on W local ranks (127.0.0.1 only, one thread
per process, contiguous shards: :mod:`implicitlab.diagnostics.distributed`); every rank builds the
operator, one warm-up product runs untimed, then ``sharpness`` (Lanczos, tol ``--tol``) is timed.
Printed per W: products, wall seconds, products per second, the ratio to W = 1 (ideal: W), λ₁ and
its residual (the same λ₁ for every W, to rounding — a check, not a claim).

On a CUDA machine (``--device cuda`` or ``auto`` with a GPU) the ranks use one GPU each: W = 1 gives
products per second for one GPU; W > 1 only with that many GPUs (``torch.cuda.device_count()``).

    .venv/bin/python benchmarks/distributed.py [--nprocs 1,2] [--num-images 2000] [--device cpu] [--data-dir ../shared/data]

Timings on a shared machine are under load: the script prints the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def problem(n: int, data_dir: str | None, device):
    """The model and this process's whole data set (every rank loads it; shards are cut later)."""
    import torch

    from implicitlab.data import balanced_subset, load_cifar10, standardize
    from implicitlab.models.convnet import poggio_fig1_net

    images, labels = load_cifar10(data_dir, "train")
    idx = balanced_subset(labels, n, seed=0)
    X = standardize(images[idx], dtype=torch.float64).images.to(device)
    y = torch.from_numpy(labels[idx]).to(torch.int64).to(device)
    torch.manual_seed(0)
    model = poggio_fig1_net(dtype=torch.float64, device=device)
    return model, X, y


def worker(args) -> None:
    """One rank: its shard, the operator, a warm-up product, then the timed sharpness."""
    import torch

    from implicitlab.config import resolve_device
    from implicitlab.diagnostics.distributed import init_from_env, shard_bounds
    from implicitlab.diagnostics.eigen import lanczos_eigenpairs
    from implicitlab.diagnostics.hessian import HessianOperator

    torch.set_num_threads(1)
    device = resolve_device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    group = init_from_env(600.0, device)
    model, X, y = problem(args.num_images, args.data_dir, device)
    start, stop = shard_bounds(X.shape[0], group.world_size, group.rank)
    H = HessianOperator(model, "ce", X[start:stop], y[start:stop], distributed=True)
    gen = torch.Generator().manual_seed(1)
    H @ torch.randn(H.dim, generator=gen, dtype=torch.float64).to(device)  # warm-up: kept graph, first-call costs
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    torch.distributed.barrier()
    t0 = time.perf_counter()
    res = lanczos_eigenpairs(H, k=1, tol=args.tol, seed=0)
    sync()
    wall = time.perf_counter() - t0
    walls = group.gather_objects(wall, "the wall times")
    if group.rank == 0:
        out = {"nproc": group.world_size, "backend": group.backend, "device": str(device),
               "num_examples": H.num_examples, "shard_sizes": H.shard_sizes, "num_params": H.dim,
               "products": int(res.num_matvecs), "wall_s": max(walls), "value": float(res.values[0]),
               "residual": float(res.residuals[0]), "converged": bool(res.all_converged)}
        Path(args.result).write_text(json.dumps(out))
    torch.distributed.destroy_process_group()


def launch(nproc: int, args) -> dict:
    from implicitlab.diagnostics.distributed import loopback_launch

    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        rendezvous, result = Path(tmp) / "rdzv", Path(tmp) / "result.json"
        rendezvous.touch()
        cmd, env = loopback_launch(nproc, ["unused"], str(rendezvous))
        cmd = cmd[: cmd.index("-m", 2)] + [__file__, "--worker", "--result", str(result), "--num-images", str(args.num_images),
                                          "--tol", repr(args.tol), "--device", args.device]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        env["OMP_NUM_THREADS"] = "1"
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the run on {nproc} processes failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nprocs", default="1,2", help="comma-separated process counts")
    parser.add_argument("--num-images", type=int, default=2000, help="CIFAR-10 training images (class-balanced)")
    parser.add_argument("--tol", type=float, default=1e-6, help="Lanczos relative residual")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--data-dir", default=None, help="data root (default ../shared/data, else ./data)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    from implicitlab.config import resolve_device

    device = resolve_device(args.device)
    nprocs = [int(v) for v in args.nprocs.split(",")]
    if device.type == "cuda":
        available = torch.cuda.device_count()
        skipped = [w for w in nprocs if w > available]
        nprocs = [w for w in nprocs if w <= available]
        if skipped:
            print(f"skipped {skipped} processes: {available} GPU(s) here, one per process")
    print(f"load average before: {os.getloadavg()}  ({os.cpu_count()} CPUs; 1 thread per process)")
    rows = [launch(w, args) for w in nprocs]
    base = rows[0]["products"] / rows[0]["wall_s"]
    print(f"Poggio CNN ({rows[0]['num_params']} parameters, float64), {rows[0]['num_examples']} CIFAR-10 images, "
          f"mean cross-entropy, sharpness to tol {args.tol:g}, device {rows[0]['device']}, backend {rows[0]['backend']}")
    print(f"{'procs':>5} {'shards':>12} {'products':>8} {'wall s':>8} {'products/s':>10} {'ratio':>6} "
          f"{'lambda_1':>22} {'residual':>9}")
    for r in rows:
        rate = r["products"] / r["wall_s"]
        print(f"{r['nproc']:>5} {str(r['shard_sizes']):>12} {r['products']:>8} {r['wall_s']:>8.2f} {rate:>10.3f} "
              f"{rate / base:>6.2f} {r['value']:>22.16g} {r['residual']:>9.2e}")
    print(f"load average after: {os.getloadavg()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    main()
