"""Marion & Chizat grid: our ensemble engine vs a faithful per-run port of the authors' algorithm.

The same slice — plain L = 10, n = 50, d = 5, one step size, every init scale, a few repetitions,
sharpness every 5 steps — is run twice in this process, with one torch thread:

- baseline (the authors' algorithm, in plain PyTorch): one run at a time, full-batch GD by
  autograd, and every 5 steps a sharpness estimate of 20 power iterations of double-backward
  Hessian–vector products (their code keeps |Hv|, no residual);
- implicitlab: all runs of the slice as one ensemble; every 5 steps every run's sharpness by the
  batched, warm-started Lanczos of ``implicitlab.diagnostics.ensemble_curvature`` (tolerance
  1e-6, explicit residual recorded).

Both are extrapolated to the authors' full linear grid (Figs 1ab, 1cd, 3 — the same runs as 1ab —,
res-1, 2 and 6, see ``marion-chizat-2024.md``): baseline = run-steps × (time per step) + estimates ×
(time per estimate); ours = run-steps × (time per run·step of the slice, estimates included). Our
``full`` presets do not need the every-5-steps estimates (they certify sharpness at init and at the
final step); their measured wall times are in the README.

Usage: ``python benchmarks/mc2024.py [--steps 300] [--reps 2] [--baseline-runs 2]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from implicitlab.diagnostics.ensemble_curvature import SharpnessProbe
from implicitlab.experiments.marion_chizat2024.common import make_problem
from implicitlab.models import Architecture, Ensemble, LayeredNet
from implicitlab.train import every, gradient_descent

# The authors' linear grid: (runs, steps per run) per block; estimates every 5 steps.
GRID = {
    "1ab/3": [(10 * r, s) for r, s in zip((20, 20, 20, 20, 80), (40_000, 10_000, 4_000, 4_000, 2_000))],
    "1cd": [(2, 450)],
    "res-1": [(10 * 20, 4_000)] * 5,
    "2": [(25 * 50, 1_000)] * 4,
    "6": [(9 * r, s) for r, s in zip((100, 20, 20), (40_000, 10_000, 4_000))],
}


def power_iteration_sharpness(model, X, y, iters=20, gen=None):
    """The authors' estimate: 20 power iterations of double-backward HVPs, returning |Hv|."""
    params = list(model.parameters())
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    norm = torch.sqrt(sum((u**2).sum() for u in v))
    v = [u / norm for u in v]
    value = torch.tensor(0.0)
    for _ in range(iters):
        loss = ((model(X).squeeze(-1) - y) ** 2).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv = torch.autograd.grad(grads, params, grad_outputs=v)
        value = torch.sqrt(sum((h**2).sum() for h in hv))
        v = [h / value for h in hv]
    return float(value)


def baseline(arch, P, scales, lr, steps, every_k):
    """Per-run loop; returns (seconds per GD step, seconds per sharpness estimate)."""
    t_steps = t_est = 0.0
    n_steps = n_est = 0
    gen = torch.Generator().manual_seed(0)
    for i, scale in enumerate(scales):
        model = LayeredNet.create(arch, scale, 1000 + i)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for step in range(steps):
            if step % every_k == 0:
                t0 = time.perf_counter()
                power_iteration_sharpness(model, P.X, P.y, gen=gen)
                t_est += time.perf_counter() - t0
                n_est += 1
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = ((model(P.X).squeeze(-1) - P.y) ** 2).mean()
            loss.backward()
            opt.step()
            t_steps += time.perf_counter() - t0
            n_steps += 1
    return t_steps / n_steps, t_est / n_est


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--baseline-runs", type=int, default=2)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    P = make_problem(50, 5, 10, 1.0, 0, torch.float64, torch.device("cpu"))
    arch = Architecture("deep_linear", d_in=5, depth=10)
    scales = [float(s) for s in np.linspace(0.25, 0.6, 10) for _ in range(args.reps)]

    step_s, est_s = baseline(arch, P, scales[: args.baseline_runs], args.lr, args.steps, args.every)

    ens = Ensemble.create(arch, scales, list(range(len(scales))))
    probe = SharpnessProbe(tol=1e-6)
    t0 = time.perf_counter()
    gradient_descent(ens, "square", P.X, P.y, lr=args.lr, num_steps=args.steps,
          probe_steps=every(args.every, args.steps - 1), probes=(probe,))
    ours = time.perf_counter() - t0
    ours_per_run_step = ours / (len(scales) * args.steps)

    print(f"slice: plain L=10, η={args.lr}, {len(scales)} runs × {args.steps} steps, sharpness every {args.every} steps")
    print(f"baseline (authors' algorithm, per run)  : {step_s * 1e6:8.1f} µs per step, {est_s * 1e3:7.2f} ms per estimate")
    print(f"implicitlab (one ensemble, Lanczos 1e-6): {ours_per_run_step * 1e6:8.1f} µs per run·step, estimates included "
          f"({probe.total_run_matvecs / max(probe.estimates, 1):.1f} products per estimate)")
    total_b = total_o = 0.0
    print(f"{'block':8s} {'run-steps':>12s} {'baseline':>12s} {'implicitlab':>12s}")
    for name, blocks in GRID.items():
        rs = sum(r * s for r, s in blocks)
        b = rs * step_s + rs / args.every * est_s
        o = rs * ours_per_run_step
        total_b += b
        total_o += o
        print(f"{name:8s} {rs:12,d} {b / 3600:10.2f} h {o / 60:10.2f} min")
    print(f"{'total':8s} {'':12s} {total_b / 3600:10.2f} h {total_o / 60:10.2f} min   ratio {total_b / total_o:,.0f}x")


if __name__ == "__main__":
    main()
