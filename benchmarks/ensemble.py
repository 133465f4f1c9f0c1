"""Ensemble throughput: 1,000 deep linear runs as one batched program vs one at a time.

Setting of issue #3: L = 10, d = 5, n = 50, square loss (mean), full-batch GD. Both are measured
in this process, after a warm-up, with one torch thread:

- baseline: a plain PyTorch loop, one run at a time (nn.Module, autograd, torch.optim.SGD), timed
  on a subset of runs and reported per run·step;
- implicitlab: all runs as one :class:`~implicitlab.models.Ensemble` trained by
  :func:`implicitlab.train` (closed-form backward pass, square-loss sufficient statistics).

Usage: ``python benchmarks/ensemble.py [--runs 1000] [--steps 200] [--baseline-runs 20]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from implicitlab.models import Architecture, Ensemble, LayeredNet
from implicitlab.train import gradient_descent


def plain_loop(arch, X, y, seeds, steps, lr):
    for seed in seeds:
        model = LayeredNet.create(arch, 0.3, seed)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = ((model(X).squeeze(-1) - y) ** 2).mean()
            loss.backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--baseline-runs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    n, d, L, lr = 50, 5, 10, 0.01
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.randn(d, generator=g, dtype=torch.float64)
    arch = Architecture("deep_linear", d_in=d, depth=L)

    plain_loop(arch, X, y, [0], 20, lr)  # warm-up
    ens = Ensemble.create(arch, [0.3] * 8, list(range(8)))
    gradient_descent(ens, "square", X, y, lr=lr, num_steps=20)

    base, fast = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain_loop(arch, X, y, range(args.baseline_runs), args.steps, lr)
        base.append(args.baseline_runs * args.steps / (time.perf_counter() - t0))
        ens = Ensemble.create(arch, [0.3] * args.runs, list(range(args.runs)))
        t0 = time.perf_counter()
        gradient_descent(ens, "square", X, y, lr=lr, num_steps=args.steps)
        fast.append(args.runs * args.steps / (time.perf_counter() - t0))
    b, f = statistics.median(base), statistics.median(fast)
    print(f"deep linear L={L}, d={d}, n={n}, square loss, {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"plain PyTorch loop, one run at a time : {b:12,.0f} run·steps/s  (median of {args.repeats})")
    print(f"implicitlab ensemble of {args.runs:5d} runs  : {f:12,.0f} run·steps/s  (median of {args.repeats})")
    print(f"ratio                                 : {f / b:12.1f}x")


if __name__ == "__main__":
    main()
