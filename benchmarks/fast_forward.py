"""Exact fast-forward of GD on a quadratic vs explicit stepping (poggio2018-fig4's setting).

Fig. 4 of Poggio et al. 2018: square loss on degree-39 polynomial features of 9 Chebyshev nodes,
GD step 0.2 (mean loss), 29 repetitions, 10,000,000 iterations with a perturbation every 120,000
until 5,000,000. Explicit stepping (the reference: one affine update per iteration, all 29 runs as
one (R, d) array, numpy float64) is timed on a short horizon and extrapolated to the paper's
iteration count; the fast-forward (:class:`implicitlab.train.QuadraticGD`) is timed on the full
schedule, and both end points are compared on the short horizon.

Usage: ``python benchmarks/fast_forward.py [--short 20000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from implicitlab.data.synthetic import chebyshev_nodes, polynomial_features, sine_target
from implicitlab.train import QuadraticGD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=20_000, help="explicit steps actually taken")
    parser.add_argument("--runs", type=int, default=29)
    args = parser.parse_args()

    x = chebyshev_nodes(9)
    A = polynomial_features(x, 40, basis="monomial")  # degree 39
    b = sine_target(x, 4.0)
    gd = QuadraticGD.least_squares(A, b, lr=0.2, reduction="mean")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((args.runs, A.shape[1])) / np.sqrt(3 * A.shape[1])

    total, period, stop = 10_000_000, 120_000, 5_000_000
    perturb_at = np.arange(period, stop + 1, period)
    perturbations = 0.45 * rng.standard_normal((len(perturb_at), args.runs, A.shape[1]))

    # explicit stepping on the short horizon
    w = w0.copy()
    c = 2.0 * gd.scale * gd.lr
    AtA, Atb = A.T @ A, A.T @ b
    t0 = time.perf_counter()
    for _ in range(args.short):
        w = w - c * (w @ AtA - Atb)
    explicit_s = time.perf_counter() - t0
    fast = gd.advance(w0, args.short)
    rel = float(np.max(np.abs(fast - w)) / np.max(np.abs(w)))

    # the fast-forward over the paper's whole schedule: perturbation events, then the tail
    t0 = time.perf_counter()
    w = w0.copy()
    done = 0
    for k, step in enumerate(perturb_at):
        w = gd.advance(w, int(step - done)) + perturbations[k]
        done = int(step)
    w = gd.advance(w, total - done)
    fast_s = time.perf_counter() - t0
    assert np.isfinite(w).all()

    per_step = explicit_s / args.short
    extrapolated = per_step * total
    print(f"Fig. 4 setting: {args.runs} runs, d = {A.shape[1]}, {total:,} iterations, {len(perturb_at)} perturbations")
    print(f"explicit stepping   : {per_step * 1e6:8.2f} µs per iteration (all runs) → {extrapolated:8.1f} s extrapolated")
    print(f"exact fast-forward  : {fast_s * 1e3:8.2f} ms for the whole schedule")
    print(f"ratio               : {extrapolated / fast_s:,.0f}x")
    print(f"agreement after {args.short:,} steps: max relative difference {rel:.1e}")


if __name__ == "__main__":
    main()
