"""Ensemble throughput: many small runs as one batched program vs the peers a user would pick instead.

Setting of issues #3 and #18: deep nets with L = 10 layers of width d = 5 (last layer 5 → 1), n = 50
examples, square loss (mean), full-batch GD in float64, one thread; two architectures, the deep
linear net and the same net with GELU (exact erf form) between the layers. Every arm starts from the
same initial weights (run r = ``Architecture.init(scale, seed=r)``) and takes the same steps; all are
measured in this process, after a warm-up, and the final losses are compared so the work is equal:

- ``loop``: a plain PyTorch loop, one run at a time (``LayeredNet``, autograd, an SGD step), timed on
  ``--baseline-runs`` runs and reported per run·step;
- ``torch.func``: ``vmap(grad(functional_call))`` over the stacked parameters of all runs, one GD step
  per call;
- ``jax``: ``jit(vmap(train))`` with the whole GD loop inside (``lax.fori_loop``), float64
  (``jax_enable_x64``), XLA's CPU backend on one thread; skipped when JAX is not installed
  (``pip install -c constraints.txt -e .[bench]``); compile time excluded (a warm-up call);
- ``implicitlab``: all runs as one :class:`~implicitlab.models.Ensemble` trained by
  :func:`implicitlab.train.gradient_descent` (written-out backward pass: linear chains by
  :mod:`~implicitlab.train.linear_grad` with the square-loss sufficient statistics, GELU chains by
  the compiled kernel of :mod:`~implicitlab.train.fused_chain`: forward, loss and backward fused, 8
  runs per 512-bit vector, GELU and its derivative from one erfc and one exp, vectorised by libmvec);
- ``implicitlab, batched PyTorch pass`` (GELU only): the same with the kernel switched off, i.e.
  :mod:`~implicitlab.train.chain_grad`'s batched ops (one ``bmm`` and one fused ATen kernel,
  ``aten.gelu`` / ``aten.gelu_backward``, per layer and direction) — what a machine without a C
  compiler runs, and what the kernel is measured against.

FLOP rate: the matrix products of one data-pass GD step, 2n·Σ_k out_k·in_k for the forward pass, as
much for the weight gradients and as much less the first layer's for the backward products
(66.5 kFLOP per run·step here), times run·steps per second, as a fraction of one core's float64
peak measured in the same run (the best of five 2048 × 2048 float64 GEMMs on one thread). The count
is the same for every arm; the linear ensemble does less actual work (its step needs no pass over
the data), so its rate is an effective one. Elementwise work (GELU's erf and exp) is not counted; on
the machine of issue #18 (AVX-512, 1,000 runs) PyTorch's fused GELU kernels cost about 3 ns (forward)
and 4–5 ns (backward) per element in float64, and a 1,000-run ``bmm`` of 5 × 5 by 5 × 50 about
0.25 ms with its operands in cache (≈ 10 GFLOP/s, an eighth of the GEMM peak) and about 0.5 ms inside
the training step (memory-bound). The kernel removes the products' overhead, but not the exact GELU:
the script times the kernel's GELU-and-derivative pass alone (one erfc and one exp per entry, 2,250
entries per run·step, in cache) and prints the rate it caps the ensemble at even with free matrix
products — the "floor" line, about 15% of this core's peak.

Usage: ``python benchmarks/ensemble.py [--runs 1000] [--steps 100] [--baseline-runs 10] [--repeats 3]``
(wall and CPU time are both printed; on a shared machine the CPU time is the steadier of the two).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# XLA's CPU backend on one thread, before JAX is imported (a user's own setting wins).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import torch  # noqa: E402

from implicitlab.models import Architecture, Ensemble, LayeredNet, activate  # noqa: E402
from implicitlab.train import fused_chain, gradient_descent  # noqa: E402

N, D, L, LR = 50, 5, 10, 0.01
SCALES = {"none": 0.3, "gelu": 0.5}  # init scale: issue #3's for the linear net, mc2024-gelu's range for GELU


def timed(fn, repeats):
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls, and its last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def peak_gflops(size: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """One thread's float64 GEMM rate (wall, CPU time): the best of ``repeats`` size × size products."""
    a = torch.randn(size, size, dtype=torch.float64)
    b = torch.randn(size, size, dtype=torch.float64)
    c = torch.empty_like(a)
    torch.mm(a, b, out=c)
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b, out=c)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return 2 * size**3 / wall / 1e9, 2 * size**3 / cpu / 1e9


def flops_per_run_step(arch: Architecture, n: int) -> int:
    shapes = arch.shapes()
    products = sum(o * i for o, i in shapes)
    return 2 * n * (3 * products - shapes[0][0] * shapes[0][1])


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out.squeeze(-1) - y) ** 2).mean(-1)


# ------------------------------------------------------------------------------------ the arms


def plain_loop(arch, weights, X, y, runs, steps):
    """One run at a time, autograd, an SGD step; returns the final losses ``(runs,)``."""
    finals = []
    for r in range(runs):
        model = LayeredNet(arch, [w[r] for w in weights])
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        for _ in range(steps):
            opt.zero_grad()
            mse(model(X), y).backward()
            opt.step()
        with torch.no_grad():
            finals.append(mse(model(X), y))
    return torch.stack(finals)


def torch_func(arch, weights, X, y, steps):
    """``vmap(grad(functional_call))`` over the stacked parameters; returns the final losses ``(R,)``."""
    from torch.func import functional_call, grad, vmap

    template = LayeredNet(arch, [w[0] for w in weights])
    names = [f"weights.{k}" for k in range(len(weights))]

    def loss(params, X, y):
        return mse(functional_call(template, params, (X,)), y)

    step_grad = vmap(grad(loss), in_dims=(0, None, None))
    params = {k: w.clone() for k, w in zip(names, weights)}
    for _ in range(steps):
        grads = step_grad(params, X, y)
        params = {k: p - LR * grads[k] for k, p in params.items()}
    return vmap(loss, in_dims=(0, None, None))(params, X, y)


def jax_arm(arch, weights, X, y, steps):
    """``jit(vmap(train))`` with the GD loop inside; returns (a function running it, its final losses)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    Xj, yj = jnp.asarray(X.numpy()), jnp.asarray(y.numpy())
    ws0 = [jnp.asarray(w.numpy()) for w in weights]
    gelu = arch.activation == "gelu"

    def loss(ws):
        h = Xj
        for k, W in enumerate(ws):
            h = h @ W.T
            if k < len(ws) - 1 and gelu:
                h = jax.nn.gelu(h, approximate=False)
        return jnp.mean((h[:, 0] - yj) ** 2)

    def train(ws):
        def body(_, ws):
            g = jax.grad(loss)(ws)
            return [w - LR * gw for w, gw in zip(ws, g)]

        return jax.lax.fori_loop(0, steps, body, ws)

    run = jax.jit(jax.vmap(train))
    final = jax.jit(jax.vmap(loss))

    def go():
        out = run(ws0)
        jax.block_until_ready(out)
        return out

    go()  # compile
    return go, lambda out: torch.from_numpy(jax.device_get(final(out)).copy())


def implicitlab_arm(arch, weights, X, y, steps, kernel=True):
    ens = Ensemble(arch, weights)
    supports = fused_chain.supports
    if not kernel:  # the batched PyTorch pass (what runs where the kernel cannot be built)
        fused_chain.supports = lambda *args, **kwargs: False
    try:
        gradient_descent(ens, "square", X, y, lr=LR, num_steps=steps, probe_steps=[])
    finally:
        fused_chain.supports = supports
    with torch.no_grad():
        return mse(ens(X), y)


# ------------------------------------------------------------------------------------ main


def bench(arch, X, y, args, peak, have_jax):
    R, steps = args.runs, args.steps
    scale = SCALES[arch.activation]
    per_run = [arch.init(scale, r) for r in range(R)]
    weights = [torch.stack([w[k] for w, _ in per_run]) for k in range(arch.depth)]
    flops = flops_per_run_step(arch, N)

    # warm-up (allocator, kernels, JAX compile)
    small = [w[:4] for w in weights]
    plain_loop(arch, small, X, y, 2, 5)
    torch_func(arch, small, X, y, 5)
    implicitlab_arm(arch, small, X, y, 5)

    rows = []
    b = args.baseline_runs
    wall, cpu, loop_final = timed(lambda: plain_loop(arch, weights, X, y, b, steps), args.repeats)
    rows.append(("plain PyTorch loop", b, b * steps / wall, b * steps / cpu, loop_final))
    wall, cpu, tf_final = timed(lambda: torch_func(arch, weights, X, y, steps), args.repeats)
    rows.append(("torch.func vmap(grad)", R, R * steps / wall, R * steps / cpu, tf_final))
    if have_jax:
        go, final = jax_arm(arch, weights, X, y, steps)
        wall, cpu, out = timed(go, args.repeats)
        rows.append(("JAX jit(vmap), fori_loop", R, R * steps / wall, R * steps / cpu, final(out)))
    if arch.activation != "none":
        wall, cpu, out = timed(lambda: implicitlab_arm(arch, weights, X, y, steps, kernel=False), args.repeats)
        rows.append(("implicitlab, batched PyTorch", R, R * steps / wall, R * steps / cpu, out))
    wall, cpu, ens_final = timed(lambda: implicitlab_arm(arch, weights, X, y, steps), args.repeats)
    rows.append(("implicitlab ensemble", R, R * steps / wall, R * steps / cpu, ens_final))

    act = "GELU" if arch.activation == "gelu" else "linear"
    print(f"\n{act}: L={L}, d={D}, n={N}, square loss, {steps} GD steps, lr={LR}, init scale {scale}, float64; "
          f"{flops / 1e3:.1f} kFLOP per run·step (matrix products)")
    print(f"{'arm':28s} {'runs':>5s} {'run·steps/s (wall)':>19s} {'(cpu)':>10s} {'ensemble ×':>10s} "
          f"{'% peak':>7s} {'max rel. Δ final loss':>22s}")
    if arch.activation != "none" and fused_chain.status().startswith("compiled"):
        # the elementwise floor: σ and σ′ of one run·step's pre-activations ((L−1)·d·n entries), in cache
        z = 0.5 * torch.randn((L - 1) * D * N, dtype=torch.float64)
        floor = fused_chain.activation_seconds(arch.activation, z)
        print(f"floor: the kernel's {arch.activation} and derivative alone take {floor * 1e6:.2f} µs per run·step "
              f"({floor / z.numel() * 1e9:.2f} ns per entry): even with free matrix products at most "
              f"{1 / floor:,.0f} run·steps/s = {100 * flops / floor / 1e9 / peak:.1f}% of peak")
    ens_rate = rows[-1][3]
    for name, runs, rate_wall, rate_cpu, final in rows:
        ref = ens_final[: len(final)]
        same_nan = final.isnan() == ref.isnan()  # a diverged run must diverge in every arm
        rel = ((final - ref).abs() / ref.abs()).nan_to_num(0.0)
        diff = float(rel.max()) if bool(same_nan.all()) else float("nan")
        pct = 100 * rate_cpu * flops / 1e9 / peak
        print(f"{name:28s} {runs:5d} {rate_wall:19,.0f} {rate_cpu:10,.0f} {ens_rate / rate_cpu:10.1f} "
              f"{pct:6.1f}% {diff:22.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--baseline-runs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["linear", "gelu"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import jax  # noqa: F401

        have_jax = True
    except ImportError:
        have_jax = False

    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = X @ torch.randn(D, generator=g, dtype=torch.float64)
    y = y / y.norm() * N**0.5  # targets of unit mean square
    peak_wall, peak = peak_gflops()
    jax_version = f", jax {jax.__version__}" if have_jax else ", JAX not installed (skipped)"
    print(f"torch {torch.__version__}{jax_version}; one thread; float64 peak of this core: {peak:.1f} GFLOP/s CPU "
          f"time ({peak_wall:.1f} wall; best of five 2048² GEMMs, measured now); rates are medians of "
          f"{args.repeats}; '% peak' and 'ensemble ×' from the CPU-time rates")
    print(f"chain kernel: {fused_chain.status()}")
    for act in ("none", "gelu"):
        if args.only is not None and (act == "gelu") != (args.only == "gelu"):
            continue
        bench(Architecture("deep_linear", d_in=D, depth=L, activation=act), X, y, args, peak, have_jax)


if __name__ == "__main__":
    main()
