"""What the Marion & Chizat 2024 experiments share: data, references, and the trained grid.

Setting (``shared/papers/marion-chizat-2024.md``): X ∈ R^{n×d} i.i.d. N(0,1), y = X w_true + σε,
w* = pinv(XᵀX)Xᵀy, y and w* scaled so that ‖w*‖ = 1; loss R(W) = (1/n)Σ(y − W_L⋯W_1 x)² (mean, no
½); plain deep linear nets (entries s·N(0,1)) or residual ones (W_k = I + s/√(Ld)·N, fixed unit
output vector). References (:func:`implicitlab.references.deep_linear.deep_linear_sharpness_bound`):
S_min = 2La‖w*‖^{2−2/L}, the line 8LΛ, κ, the critical step 2/S_min.

:func:`train_grid` trains all repetitions × init scales of one step size as one ensemble and
returns one row per run: the outcome (``diverged`` — the loss became NaN/inf — or ``converged``:
‖w_e − w*‖² ≤ ``converged_tol``, else neither), the end-to-end distance, train and test loss, and
the sharpness at initialisation and at the true final step, each certified by its explicit residual
‖Hv − λv‖ (batched Lanczos, :mod:`implicitlab.diagnostics.ensemble_curvature`).

In the underdetermined case (n < d) every interpolant is a minimizer and w* is the minimum-norm one;
there the distance to w* is reported but "converged" means the train loss reached its minimum
(≤ ``converged_tol``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from ...config import ConfigError, dtype_of, require, require_positive
from ...data.synthetic import marion_chizat_regression
from ...diagnostics import alignment, rank_one_ratio
from ...diagnostics.ensemble_curvature import ensemble_sharpness
from ...losses import loss as loss_fn
from ...models import Architecture, Ensemble
from ...references.deep_linear import deep_linear_sharpness_bound
from ...train import gradient_descent

SOURCE = "Marion & Chizat 2024"


@dataclass(frozen=True)
class Problem:
    """Tensors of one data draw and its Marion–Chizat constants."""

    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    w_star: torch.Tensor
    s_min: float
    upper_line: float
    kappa: float
    a: float
    lambda_max: float
    critical_step: float
    overdetermined: bool


def make_problem(n: int, d: int, depth: int, noise: float, seed: int, dtype, device) -> Problem:
    data = marion_chizat_regression(n, d, noise=noise, seed=seed)
    ref = deep_linear_sharpness_bound(data["X"], data["y"], depth)
    t = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in data.items()}
    return Problem(
        X=t["X"], y=t["y"], X_test=t["X_test"], y_test=t["y_test"], w_star=t["w_star"],
        s_min=float(ref.s_min), upper_line=float(ref.upper_line), kappa=float(ref.kappa), a=float(ref.a),
        lambda_max=float(ref.lambda_max), critical_step=float(ref.critical_step), overdetermined=n >= d,
    )


def check_grid(lrs: tuple, steps: tuple, reps: tuple) -> None:
    if not (len(lrs) == len(steps) == len(reps)) or not lrs:
        raise ConfigError(f"lrs, steps and repetitions need one entry each per step size, got "
                          f"{len(lrs)}, {len(steps)}, {len(reps)}")
    for name, values in (("lrs", lrs), ("steps", steps), ("repetitions", reps)):
        if any(not (v > 0) for v in values):
            raise ConfigError(f"every entry of {name} must be positive, got {values}")


@lru_cache(maxsize=8)
def _cached_grid(key: tuple) -> pd.DataFrame:
    return _train_grid(*key)


def train_grid(arch: Architecture, problem_key: tuple, lr: float, steps: int, scales: tuple, reps: int,
               seed: int, sharpness_tol: float, converged_tol: float, dtype_name: str, device_str: str,
               alignment_metrics: bool = False) -> pd.DataFrame:
    """One step size: reps × scales runs as one ensemble; one row per run (see module docstring).

    Cached by its arguments within a process, so experiments that share runs (Fig. 1 and Fig. 3
    use the same grid) train them once per ``implicitlab run all``.
    """
    key = (arch, problem_key, float(lr), int(steps), tuple(float(s) for s in scales), int(reps), int(seed),
           float(sharpness_tol), float(converged_tol), dtype_name, device_str, bool(alignment_metrics))
    return _cached_grid(key).copy()


def problem_from_key(key: tuple, dtype, device) -> Problem:
    n, d, depth, noise, seed = key
    return make_problem(n, d, depth, noise, seed, dtype, device)


def _train_grid(arch, problem_key, lr, steps, scales, reps, seed, sharpness_tol, converged_tol, dtype_name,
                device_str, alignment_metrics) -> pd.DataFrame:
    from ...config import dtype_of

    dtype, device = dtype_of(dtype_name), torch.device(device_str)
    P = problem_from_key(problem_key, dtype, device)
    run_scales = [s for s in scales for _ in range(reps)]
    run_reps = [r for _ in scales for r in range(reps)]
    seeds = [seed * 1_000_003 + 7919 * i + 1 for i in range(len(run_scales))]
    ens = Ensemble.create(arch, run_scales, seeds, dtype=dtype, device=device)
    s0 = ensemble_sharpness(ens, "square", P.X, P.y, tol=sharpness_tol, max_matvecs=200)
    res = gradient_descent(ens, "square", P.X, P.y, lr=lr, num_steps=steps)
    s1 = ensemble_sharpness(ens, "square", P.X, P.y, tol=sharpness_tol, max_matvecs=200)
    with torch.no_grad():
        train_loss = loss_fn("square", ens(P.X), P.y)
        test_loss = loss_fn("square", ens(P.X_test), P.y_test)
        if arch.activation == "none":
            w_e = ens.end_to_end()[:, 0, :]
            distance = ((w_e - P.w_star) ** 2).sum(-1)
        else:  # nonlinear: distance of the predictions on the training inputs to X w*
            distance = ((ens(P.X)[..., 0] - P.X @ P.w_star) ** 2).mean(-1)
    diverged = res.diverged
    table = pd.DataFrame({
        "lr": lr, "steps": steps, "scale": run_scales, "rep": run_reps, "seed": seeds,
        "diverged": diverged,
        "diverged_step": [np.nan if s is None else s for s in res.diverged_step],
        "distance": distance.cpu().numpy(),
        "train_loss": train_loss.cpu().numpy(),
        "test_loss": test_loss.cpu().numpy(),
        "sharpness_init": s0.values[:, 0].numpy(),
        "sharpness_init_residual": s0.residuals[:, 0].numpy(),
        "sharpness_init_converged": s0.converged[:, 0].numpy(),
        "sharpness": s1.values[:, 0].numpy(),
        "sharpness_residual": s1.residuals[:, 0].numpy(),
        "sharpness_converged": s1.converged[:, 0].numpy(),
    })
    min_loss = float(loss_fn("square", (P.X @ P.w_star).unsqueeze(-1), P.y))
    if P.overdetermined and arch.activation == "none":
        table["converged"] = ~table.diverged & (table.distance <= converged_tol)
    else:
        table["converged"] = ~table.diverged & (table.train_loss - min_loss <= converged_tol)
    table["gap"] = table.test_loss - table.train_loss
    if alignment_metrics:
        with torch.no_grad():
            ratios = rank_one_ratio(ens)  # (R, L)
            align = alignment(ens)  # (R, L-1)
        table["rank_one_ratio_min"] = ratios.amin(-1).cpu().numpy()
        table["alignment_min"] = align.amin(-1).cpu().numpy() if align.shape[-1] else np.nan
    for name in ("s_min", "upper_line", "kappa", "a", "lambda_max", "critical_step"):
        table[name] = getattr(P, name)
    table["min_loss"] = min_loss
    return table


def spearman(x, y) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value (scipy); NaN when undefined."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), float("nan")
    r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


def run_step_sizes(cfg, arch: Architecture, device: torch.device, progress=None, share: float = 1.0) -> pd.DataFrame:
    """Every step size of ``cfg`` (reps × scales runs each, one ensemble per step size), one row per run.

    ``cfg`` needs the fields of :class:`GridConfig` (``Fig1Config`` has them too).
    """
    frames = []
    for i, (lr, steps, reps) in enumerate(zip(cfg.lrs, cfg.steps, cfg.repetitions)):
        frames.append(train_grid(arch, (cfg.n, cfg.d, cfg.depth, cfg.noise, cfg.data_seed), lr, steps, cfg.scales,
                                 reps, cfg.seed + i, cfg.sharpness_tol, cfg.converged_tol, cfg.dtype, str(device)))
        if progress:
            progress(share * (i + 1) / len(cfg.lrs))
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "part", "grid")
    return out


@dataclass(frozen=True)
class GridConfig:
    """A grid over step sizes × init scales × repetitions on Marion–Chizat data (defaults: Fig. 6)."""

    kind: str = "deep_linear"  # or "residual"
    depth: int = 5
    n: int = 15
    d: int = 20
    noise: float = 1.0
    data_seed: int = 0
    activation: str = "none"
    lrs: tuple[float, ...] = (0.001, 0.004, 0.01)
    steps: tuple[int, ...] = (40_000, 10_000, 4_000)
    repetitions: tuple[int, ...] = (100, 20, 20)
    scale_min: float = 0.1
    scale_max: float = 0.36
    num_scales: int = 9
    sharpness_tol: float = 1e-6
    converged_tol: float = 1e-8  # overdetermined linear: ‖w_e − w*‖²; else train loss − min loss
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        check_grid(self.lrs, self.steps, self.repetitions)
        require(self.kind in ("deep_linear", "residual"), f"kind must be 'deep_linear' or 'residual', got {self.kind!r}")
        require(self.activation in ("none", "gelu"), f"activation must be 'none' or 'gelu', got {self.activation!r}")
        require(0 <= self.scale_min <= self.scale_max and self.num_scales >= 1, "invalid scale range")
        require(self.depth >= 1 and self.n >= 1 and self.d >= 1, "depth, n and d must be ≥ 1")
        require(self.noise >= 0, "noise must be ≥ 0")
        require_positive("sharpness_tol", self.sharpness_tol)
        require_positive("converged_tol", self.converged_tol)
        dtype_of(self.dtype)

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linspace(self.scale_min, self.scale_max, self.num_scales))

    @property
    def architecture(self) -> Architecture:
        return Architecture(self.kind, d_in=self.d, depth=self.depth, activation=self.activation)


def run_grid(cfg: GridConfig, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    """``run`` of the grid experiments (resnet, Fig. 6, GELU)."""
    return run_step_sizes(cfg, cfg.architecture, device, progress)
