"""Sharpness benchmark: Lanczos with residuals vs a PyHessian-style power iteration, same process.

Two problems (issue 4, Done-when), float64, one CPU thread, on ``--device`` (cpu by default):

(a) Poggio et al.'s 5-layer all-convolutional CIFAR-10 net (5 conv 3×3 layers, 16 channels,
    stride 2 instead of pooling, ReLU, then a linear layer to 10 classes: 9,898 parameters),
    1,000 CIFAR-10 training images (the first 100 of each class, read from the JPEG zip),
    cross-entropy, at initialisation and along full-batch gradient descent.
(b) Marion & Chizat's deep linear regression net, L = 10, d = 5, n = 50 (‖w*‖ = 1, square loss
    without ½), at a small-scale initialisation (0.25), along GD (lr 0.02) and after it.

At each point: the float64 reference λ₁ (cold Lanczos to a relative residual 1e-13), then the
products, wall time and relative error of
  - power iteration, PyHessian's rule (relative change < 1e-3, ≤ 100 products), random starts;
  - our Lanczos, tol 1e-6, criterion "residual" (certified) and "gap" (r²/gap), random starts;
  - ARPACK eigsh (default ncv = 20), tol 1e-6;
and the cost of one product relative to one gradient of the same data and chunks: recomputed
(torch.func, double backward), through a kept graph (``reuse="graph"``) and through the linearized
program (``reuse="linearized"``), with the once-per-θ and once-per-operator work. Along GD (for
(a) at the step sizes and probe spacings of ``--cnn-schedules``): the products per estimate when
Lanczos is warm-started from the previous eigenvector, or from its linear extrapolation, each
estimate checked against a cold certified reference, and how far the top eigenvector turned
between estimates. Ratios are to the baseline measured in this run; nothing here is a timed test.
About 25 minutes on one CPU core (the references dominate); ``--skip-cnn`` / ``--skip-deep-linear``.

    .venv/bin/python benchmarks/sharpness.py [--data-dir ../shared/data] [--device cpu] [--starts 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from implicitlab.diagnostics.eigen import lanczos_eigenpairs, power_iteration
from implicitlab.diagnostics.hessian import HessianOperator
from implicitlab.references.deep_linear import deep_linear_sharpness_bound

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ problems ---
def cifar_subset(data_dir: Path, per_class: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` training images of each class, standardised per channel.

    Returns X ``(10·per_class, 3, 32, 32)`` float64 and labels ``(10·per_class,)`` int64.
    """
    from PIL import Image

    path = data_dir / "cifar10-jpeg-q75.zip"
    images, labels = [], []
    with zipfile.ZipFile(path) as z:
        for label, name in enumerate(CLASSES):
            for i in range(per_class):
                with z.open(f"train/{name}/{i:04d}.jpg") as f:
                    images.append(np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB")))
                labels.append(label)
    X = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(torch.float64) / 255.0  # (N, 3, 32, 32)
    X = (X - X.mean(dim=(0, 2, 3), keepdim=True)) / X.std(dim=(0, 2, 3), keepdim=True)
    return X, torch.tensor(labels)


def poggio_cnn(seed: int = 0) -> nn.Module:
    """5 conv 3×3 layers of 16 channels, stride 2 (no pooling), ReLU; linear 16 → 10. 9,898 parameters."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(5):  # 32 → 16 → 8 → 4 → 2 → 1 pixels
        layers += [nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU()]
        channels = 16
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(16, 10)).double()


def marion_chizat_data(n: int = 50, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """X ~ N(0, 1), y = X w + ε, then y divided by ‖w*‖ so that ‖w*‖ = 1 (their normalisation)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.randn(d, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    w_star = torch.linalg.pinv(X) @ y
    return X, y / torch.linalg.vector_norm(w_star)


def deep_linear_net(depth: int = 10, d: int = 5, scale: float = 0.25, seed: int = 0) -> nn.Module:
    """W_1 … W_{L−1} (d × d), W_L (1 × d), entries scale·N(0, 1), no biases."""
    torch.manual_seed(seed)
    layers = [nn.Linear(d, d if k < depth - 1 else 1, bias=False) for k in range(depth)]
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        for layer in net:
            layer.weight.normal_(0.0, scale)
    return net


# ------------------------------------------------------------------------------- helpers ---
def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference(H: HessianOperator, seed: int = 123, tol: float = 1e-13) -> tuple[float, float, int]:
    """λ₁, λ₂ by a cold Lanczos run to a relative residual ``tol`` (certified), and its products."""
    res = lanczos_eigenpairs(H, k=2, tol=tol, max_matvecs=min(H.dim, 400), seed=seed)
    if not res.all_converged:
        raise RuntimeError(f"the reference did not converge:\n{res}")
    return float(res.values[0]), float(res.values[1]), res.num_matvecs


def solver_rows(H: HessianOperator, lam1: float, starts: int) -> list[tuple]:
    """(method, median products, median time s, median relative error, max relative error)."""
    from scipy.sparse.linalg import eigsh

    def run(fn) -> tuple[int, float, float]:
        before = H.num_matvecs
        start = time.perf_counter()
        value = fn()
        return H.num_matvecs - before, time.perf_counter() - start, abs(value - lam1) / abs(lam1)

    methods = {
        "power iteration (PyHessian rule)": lambda s: float(power_iteration(H, seed=s).values[0]),
        "Lanczos tol 1e-6, residual": lambda s: float(lanczos_eigenpairs(H, tol=1e-6, seed=s).values[0]),
        "Lanczos tol 1e-6, gap": lambda s: float(lanczos_eigenpairs(H, tol=1e-6, criterion="gap", seed=s).values[0]),
        "ARPACK eigsh ncv=20 tol 1e-6": lambda s: float(
            eigsh(H.to_scipy(), k=1, which="LA", tol=1e-6, v0=np.random.default_rng(s).standard_normal(H.dim),
                  return_eigenvectors=False)[0]
        ),
    }
    rows = []
    for name, fn in methods.items():
        results = [run(lambda: fn(s)) for s in range(starts)]
        products, seconds, errors = zip(*results)
        medians = [statistics.median(x) for x in (products, seconds, errors)]
        rows.append((name, *medians, max(errors)))
    return rows


def costs(model: nn.Module, loss: str, X, y, repeats: int = 7) -> dict[str, float]:
    """Seconds per gradient and per product, all with the same chunks, interleaved ``repeats`` times.

    Products: recomputed by each backend (forward-over-reverse ``torch.func``; double backward),
    and through the kept gradient graph (the default; a Lanczos run's products after its first),
    plus the one-off cost of building those graphs at a new θ (forward + backward with
    ``create_graph``) — what a warm-started estimate pays once per point of training.
    """
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64, device=X.device)
    kw = dict(check_determinism=False)
    func = HessianOperator(model, loss, X, y, backend="func", reuse="none", **kw)
    autograd = HessianOperator(model, loss, X, y, backend="autograd", reuse="none", **kw)
    reused = HessianOperator(model, loss, X, y, **kw)
    linear = HessianOperator(model, loss, X, y, reuse="linearized", **kw)
    began = time.perf_counter()
    linear @ v  # traces the program (once per chunk shape) and checks it against a recomputed product
    trace_seconds = time.perf_counter() - began

    def build(op: HessianOperator) -> None:
        op.release_graphs()
        op.kept.current()

    tasks = {
        "gradient": func.loss_and_gradient,
        "hvp func": lambda: func @ v,
        "hvp autograd": lambda: autograd @ v,
        "graph build": lambda: build(reused),
        "hvp reused": lambda: reused @ v,  # after "graph build": the graphs are kept
        "primal run": lambda: build(linear),
        "hvp linearized": lambda: linear @ v,  # after "primal run"
    }
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for fn in tasks.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in tasks.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            times[name].append(time.perf_counter() - start)
    for op, want in ((reused, "graph"), (linear, "linearized")):
        if op.reuse_status != want:
            raise RuntimeError(f"reuse {want!r} fell back: {op.reuse_status}")
    out = {name: statistics.median(t) for name, t in times.items()}
    out["trace"] = trace_seconds
    return out


def report_point(title: str, model: nn.Module, loss: str, X, y, starts: int, reuse: str = "graph") -> None:
    """Solvers from random starts at one point, against the float64 reference; product cost.

    All solvers share one operator (``reuse``: the products are the same, only faster), so their
    times compare the methods alone."""
    H = HessianOperator(model, loss, X, y, reuse=reuse)
    lam1, lam2, ref_products = reference(H)
    lam_min = float(lanczos_eigenpairs(H, which="SA", tol=1e-8, max_matvecs=min(H.dim, 400)).values[0])
    print(f"\n== {title}: D = {H.dim}, N = {H.num_examples}, loss {loss!r}, float64, chunk {H.chunk_size}")
    print(f"reference λ₁ = {lam1:.12e} (relative residual ≤ 1e-13, {ref_products} products); "
          f"λ₂/λ₁ = {lam2 / lam1:.4f}; λ_min/λ₁ = {lam_min / lam1:.4f}")
    rows = solver_rows(H, lam1, starts)
    base_products, base_time = rows[0][1], rows[0][2]
    print(f"{'method (median of ' + str(starts) + ' random starts)':<36} {'products':>8} {'time s':>8} "
          f"{'time/base':>9} {'rel err median':>14} {'rel err max':>11}")
    for name, products, seconds, err, worst in rows:
        print(f"{name:<36} {products:>8.0f} {seconds:>8.3f} {seconds / base_time:>9.2f} {err:>14.1e} {worst:>11.1e}")
    print(f"products / baseline: Lanczos residual {rows[1][1] / base_products:.2f}, "
          f"gap {rows[2][1] / base_products:.2f}, "
          f"ARPACK {rows[3][1] / base_products:.2f}")
    cost = costs(model, loss, X, y)
    g = cost["gradient"]
    print(f"one product / one gradient (gradient {1e3 * g:.1f} ms): linearized {cost['hvp linearized'] / g:.2f}, "
          f"kept graph (default) {cost['hvp reused'] / g:.2f}, recomputed by torch.func {cost['hvp func'] / g:.2f}, "
          f"by double backward {cost['hvp autograd'] / g:.2f}")
    print(f"   once per θ: primal run (linearized) {cost['primal run'] / g:.2f}, graph build {cost['graph build'] / g:.2f} "
          f"gradients; once per operator: the linearized trace {cost['trace']:.2f} s = {cost['trace'] / g:.0f} gradients")
    for m in (4, 16):
        kept = (cost["graph build"] + m * cost["hvp reused"]) / m
        lin = (cost["primal run"] + m * cost["hvp linearized"]) / m
        print(f"   an {m}-product solve, per-θ work included: {lin / g:.2f} (linearized), {kept / g:.2f} (kept graph) "
              "gradients per product")


def report_warm(title: str, model: nn.Module, loss: str, X, y, lr: float, steps: int, every: int,
                reuse: str = "graph") -> None:
    """Full-batch GD; every ``every`` steps λ₁ by Lanczos warm-started from earlier eigenvectors.

    Warm starts: the previous eigenvector v_t ("previous"), and its linear extrapolation
    v_t + (v_t − v_{t−1}) after aligning signs ("extrapolated"); stopping criteria "gap" (relative
    eigenvalue error ≤ 1e-6 estimated as r²/gap) and "residual" (certified, previous start only).
    Each estimate is checked against a cold reference (random start, relative residual 1e-9,
    so its eigenvalue is exact to far below 1e-6). The model is trained in place.
    """
    H = HessianOperator(model, loss, X, y, reuse=reuse)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    chains = [("previous", "gap"), ("extrapolated", "gap"), ("previous", "residual")]
    history = {c: [] for c in chains}  # the eigenvectors found, newest last
    counts = {c: [] for c in chains}
    errors = {c: [] for c in chains}
    converged = {c: True for c in chains}
    trace, turns = [], []
    last: torch.Tensor | None = None  # the previous reference eigenvector
    began = time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0:
            ref = lanczos_eigenpairs(H, k=2, tol=1e-9, max_matvecs=min(H.dim, 400), seed=step)
            if not ref.all_converged:
                raise RuntimeError(f"the reference did not converge:\n{ref}")
            lam1 = float(ref.values[0])
            if last is not None:
                turns.append(float(torch.arccos(abs(ref.vectors[:, 0] @ last).clamp(max=1.0))))
            last = ref.vectors[:, 0]
            trace.append(lam1)
            for chain in chains:
                past = history[chain]
                v0 = past[-1] if past else None
                if chain[0] == "extrapolated" and len(past) >= 2:
                    v0 = 2 * past[-1] - past[-2]
                res = lanczos_eigenpairs(H, tol=1e-6, criterion=chain[1], v0=v0)
                v = res.vectors[:, 0]
                if past and float(v @ past[-1]) < 0:  # eigenvectors have no sign: keep a smooth path
                    v = -v
                history[chain] = [*past[-1:], v]
                counts[chain].append(res.num_matvecs)
                errors[chain].append(abs(float(res.values[0]) - lam1) / abs(lam1))
                converged[chain] &= res.all_converged
        if step < steps:
            opt.zero_grad()
            H.loss_fn(model(X), y).backward()
            opt.step()
    print(f"\n-- warm start, {title}: GD lr {lr:g}, {steps} steps, λ₁ every {every} steps "
          f"({len(trace)} estimates, λ₁ {trace[0]:.4g} → {trace[-1]:.4g}, 2/lr = {2 / lr:.4g}; the top "
          f"eigenvector turns by {np.degrees(statistics.median(turns)):.2f}° (median) between estimates; "
          f"{time.perf_counter() - began:.0f} s)")
    for chain in chains:
        warm = counts[chain][2:]  # from the third estimate on, both warm starts are in force
        print(f"   v0 {chain[0]:<12} criterion {chain[1]!r:<10}: {statistics.mean(warm):5.2f} products per "
              f"estimate (max {max(warm)}; cold first {counts[chain][0]}), rel error median "
              f"{statistics.median(errors[chain]):.1e} max {max(errors[chain]):.1e}, all converged {converged[chain]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (float64 either way)")
    parser.add_argument("--starts", type=int, default=5, help="random starts per method")
    parser.add_argument("--cnn-estimates", type=int, default=10, help="warm estimates per CNN schedule")
    parser.add_argument("--cnn-schedules", default="0.1:1,0.1:5,1:1,1:5",
                        help="GD step size:steps between estimates, for the CNN warm-start runs (comma-separated); "
                             "0.1 is the full-batch GD step of our Fig. 5 experiment")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--skip-deep-linear", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, 1 CPU thread, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    if not args.skip_deep_linear:  # (b) Marion–Chizat's L = 10, d = 5, n = 50, init scale 0.25, lr 0.02
        X, y = marion_chizat_data()
        bound = deep_linear_sharpness_bound(X, y, 10)
        print(f"deep linear data: S_min = {bound.s_min:.4f}, 8LΛ = {bound.upper_line:.2f}, "
              f"2/S_min = {bound.critical_step:.4f}")
        X, y, net = X.to(device), y.to(device), deep_linear_net().to(device)
        report_point("(b) deep linear L=10, d=5, n=50 at init (scale 0.25)", net, "square", X, y, args.starts)
        report_warm("(b) deep linear from init", net, "square", X, y, lr=0.02, steps=3000, every=5)
        report_point("(b) deep linear after 3000 GD steps (lr 0.02)", net, "square", X, y, args.starts)

    if not args.skip_cnn:
        X, y = cifar_subset(args.data_dir)
        X, y, cnn = X.to(device), y.to(device), poggio_cnn().to(device)
        report_point("(a) Poggio 5-layer CNN, 1000 CIFAR-10 images, at init", cnn, "ce", X, y, args.starts,
                     reuse="linearized")
        for schedule in args.cnn_schedules.split(","):
            lr, every = float(schedule.split(":")[0]), int(schedule.split(":")[1])
            report_warm("(a) CNN from init", poggio_cnn().to(device), "ce", X, y, lr=lr, every=every,
                        steps=every * args.cnn_estimates, reuse="linearized")


if __name__ == "__main__":
    main()
