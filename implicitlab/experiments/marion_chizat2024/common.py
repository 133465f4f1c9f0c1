"""What the Marion & Chizat 2024 experiments share: the data, the grid of runs, its claims and panels.

Setting (``shared/papers/marion-chizat-2024.md``): X ∈ R^{n×d} i.i.d. N(0,1), y = X w_true + σε,
w* = pinv(XᵀX)Xᵀy, y and w* scaled so that ‖w*‖ = 1; loss R(W) = (1/n)Σ(y − W_L⋯W_1 x)² (mean, no
½); plain deep linear nets (entries s·N(0,1)) or residual ones (W_k = I + s/√(Ld)·N, fixed unit
output vector). References (:func:`implicitlab.references.deep_linear.deep_linear_sharpness_bound`):
S_min = 2La‖w*‖^{2−2/L}, the line 8LΛ, κ, the critical step 2/S_min.

The grid (:class:`GridConfig`, :func:`run_grid`) — step sizes × init scales × repetitions — is what
Fig. 1(a, b), Fig. 3, res-1, Fig. 6 and the GELU experiment train. All repetitions × init scales of
one step size train as one ensemble; the table has one row per run: the outcome (``diverged`` — the
loss became NaN/inf — or ``converged``: ‖w_e − w*‖² ≤ ``converged_tol``, else neither), the
end-to-end distance, train and test loss, and the sharpness at initialisation and at the true final
step, each certified by its explicit residual ‖Hv − λv‖ (batched Lanczos,
:mod:`implicitlab.diagnostics.ensemble_curvature`).

In the underdetermined case (n < d) every interpolant is a minimizer and w* is the minimum-norm one;
there the distance to w* is reported but "converged" means the train loss reached its minimum
(≤ ``converged_tol``).

:class:`Fig1Config` and its presets live here because two experiments read the same runs: Fig. 1
trains them, Fig. 3 is a view of them (``view_of="mc2024-fig1"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from ...config import dtype_of, require, require_positive
from ...data.synthetic import marion_chizat_regression
from ...diagnostics.ensemble_curvature import ensemble_sharpness
from ...losses import loss as loss_fn
from ...models import Architecture, Ensemble
from ...references.deep_linear import deep_linear_sharpness_bound
from ...seeds import derive_seed
from ...train import gradient_descent
from ..claims import Claim

SOURCE = "Marion & Chizat 2024"


# ------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Problem:
    """Tensors of one data draw and its Marion–Chizat constants."""

    X: torch.Tensor  # (n, d)
    y: torch.Tensor  # (n,)
    X_test: torch.Tensor  # (n, d)
    y_test: torch.Tensor  # (n,)
    w_star: torch.Tensor  # (d,), ‖w*‖ = 1
    s_min: float
    upper_line: float
    kappa: float
    a: float
    lambda_max: float
    critical_step: float
    overdetermined: bool


def make_problem(n: int, d: int, depth: int, noise: float, seed: int, dtype, device) -> Problem:
    """The data draw ``seed`` (n examples in dimension d, label noise σ = ``noise``) and its constants at depth L."""
    data = marion_chizat_regression(n, d, noise=noise, seed=seed)
    ref = deep_linear_sharpness_bound(data["X"], data["y"], depth)
    t = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in data.items()}
    return Problem(
        X=t["X"], y=t["y"], X_test=t["X_test"], y_test=t["y_test"], w_star=t["w_star"],
        s_min=float(ref.s_min), upper_line=float(ref.upper_line), kappa=float(ref.kappa), a=float(ref.a),
        lambda_max=float(ref.lambda_max), critical_step=float(ref.critical_step), overdetermined=n >= d,
    )


# ------------------------------------------------------------------------------------ the grid


@dataclass(frozen=True)
class GridConfig:
    """A grid over step sizes × init scales × repetitions on Marion–Chizat data (defaults: Fig. 6)."""

    kind: str = "deep_linear"  # or "residual"
    depth: int = 5
    n: int = 15
    d: int = 20
    noise: float = 1.0  # σ of the label noise
    data_seed: int = 0
    activation: str = "none"  # or "gelu", between the layers
    lrs: tuple[float, ...] = (0.001, 0.004, 0.01)  # full-batch GD step (mean loss, no ½)
    steps: tuple[int, ...] = (40_000, 10_000, 4_000)  # GD steps, one entry per step size
    repetitions: tuple[int, ...] = (100, 20, 20)  # runs per init scale, one entry per step size
    scale_min: float = 0.1  # init scales linspace(scale_min, scale_max, num_scales)
    scale_max: float = 0.36
    num_scales: int = 9
    sharpness_tol: float = 1e-6  # relative residual ‖Hv − λv‖ ≤ tol·|λ|
    converged_tol: float = 1e-8  # overdetermined linear: ‖w_e − w*‖²; else train loss − min loss
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        lrs, steps, reps = self.lrs, self.steps, self.repetitions
        require(len(lrs) == len(steps) == len(reps) and len(lrs) > 0,
                f"lrs, steps and repetitions need one entry each per step size, got {len(lrs)}, {len(steps)}, "
                f"{len(reps)}")
        for name, values in (("lrs", lrs), ("steps", steps), ("repetitions", reps)):
            require(all(v > 0 for v in values), f"every entry of {name} must be positive, got {values}")
        require(self.kind in ("deep_linear", "residual"), f"kind must be 'deep_linear' or 'residual', got {self.kind!r}")
        require(self.activation in ("none", "gelu"), f"activation must be 'none' or 'gelu', got {self.activation!r}")
        require(0 <= self.scale_min <= self.scale_max, "need 0 ≤ scale_min ≤ scale_max")
        require(self.num_scales >= 1, "num_scales must be ≥ 1")
        require(self.depth >= 1 and self.n >= 1 and self.d >= 1, "depth, n and d must be ≥ 1")
        require(self.noise >= 0, "noise must be ≥ 0")
        require_positive("sharpness_tol", self.sharpness_tol)
        require_positive("converged_tol", self.converged_tol)
        dtype_of(self.dtype)

    MEMORY_FIELDS: ClassVar[tuple[str, ...]] = ("depth", "d", "repetitions", "num_scales")
    """The fields :meth:`estimate_bytes` grows with (named when the CLI refuses a config)."""

    def max_runs(self) -> int:
        """Runs trained side by side at most: one step size's ensemble, repetitions × init scales."""
        return max(self.repetitions) * self.num_scales

    def estimate_bytes(self) -> int:
        """Peak memory of the grid, in bytes (an estimate, within a small factor; the CLI checks it first).

        One step size trains R = repetitions × num_scales runs as one ensemble of D ≈ depth·d² parameters
        each (layers of d × d), in ``dtype``. The largest allocation is the Lanczos basis of the sharpness
        estimates, up to min(200, D) vectors of R × D numbers (``max_matvecs=200``); a factor 8 more vectors
        covers the weights, gradients, products and their workspace, and 4 × n × d × depth × R numbers the
        activations of the forward and backward passes.
        """
        item = torch.empty((), dtype=dtype_of(self.dtype)).element_size()
        R, D = self.max_runs(), self.depth * self.d * self.d
        vectors = min(200, D) + 8
        return item * (R * D * vectors + 4 * self.n * self.d * self.depth * R)

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linspace(self.scale_min, self.scale_max, self.num_scales))

    @property
    def architecture(self) -> Architecture:
        return Architecture(self.kind, d_in=self.d, depth=self.depth, activation=self.activation)

    def problem(self, device: torch.device) -> Problem:
        return make_problem(self.n, self.d, self.depth, self.noise, self.data_seed, dtype_of(self.dtype), device)


def train_grid(arch: Architecture, P: Problem, *, lr: float, steps: int, scales: tuple[float, ...], repetitions: int,
               seed: int, sharpness_tol: float, converged_tol: float) -> pd.DataFrame:
    """One step size: repetitions × scales runs as one ensemble; one row per run (see module docstring)."""
    dtype, device = P.X.dtype, P.X.device
    run_scales = [s for s in scales for _ in range(repetitions)]
    run_reps = [r for _ in scales for r in range(repetitions)]
    seeds = [derive_seed(seed, "init", i) for i in range(len(run_scales))]
    ens = Ensemble.create(arch, run_scales, seeds, dtype=dtype, device=device)
    s0 = ensemble_sharpness(ens, "square", P.X, P.y, tol=sharpness_tol, max_matvecs=200)
    res = gradient_descent(ens, "square", P.X, P.y, lr=lr, num_steps=steps)
    s1 = ensemble_sharpness(ens, "square", P.X, P.y, tol=sharpness_tol, max_matvecs=200)
    with torch.no_grad():
        train_loss = loss_fn("square", ens(P.X), P.y)  # (R,)
        test_loss = loss_fn("square", ens(P.X_test), P.y_test)  # (R,)
        if arch.activation == "none":
            w_e = ens.end_to_end()[:, 0, :]  # (R, d)
            distance = ((w_e - P.w_star) ** 2).sum(-1)
        else:  # nonlinear: distance of the predictions on the training inputs to X w*
            distance = ((ens(P.X)[..., 0] - P.X @ P.w_star) ** 2).mean(-1)
    table = pd.DataFrame({
        "lr": lr, "steps": steps, "scale": run_scales, "rep": run_reps, "seed": seeds,
        "diverged": res.diverged,
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
    for name in ("s_min", "upper_line", "kappa", "a", "lambda_max", "critical_step"):
        table[name] = getattr(P, name)
    table["min_loss"] = min_loss
    return table


def run_grid(cfg: GridConfig, *, device: torch.device = torch.device("cpu"), progress=None,
             share: float = 1.0) -> pd.DataFrame:
    """Every step size of ``cfg`` (one ensemble each), one row per run, ``part = "grid"``.

    ``progress`` gets fractions up to ``share`` (Fig. 1 trains more after the grid). This is
    ``run`` of the grid experiments (res-1, Fig. 6, GELU).
    """
    P = cfg.problem(device)
    frames = []
    for i, (lr, steps, reps) in enumerate(zip(cfg.lrs, cfg.steps, cfg.repetitions)):
        frames.append(train_grid(cfg.architecture, P, lr=float(lr), steps=int(steps), scales=cfg.scales,
                                 repetitions=int(reps), seed=derive_seed(cfg.seed, "step_size", i), sharpness_tol=float(cfg.sharpness_tol),
                                 converged_tol=float(cfg.converged_tol)))
        if progress:
            progress(share * (i + 1) / len(cfg.lrs))
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "part", "grid")
    return out


GRID_COLUMNS = ("part", "lr", "steps", "scale", "rep", "seed", "diverged", "diverged_step", "distance", "train_loss",
                "test_loss", "sharpness_init", "sharpness_init_residual", "sharpness_init_converged", "sharpness",
                "sharpness_residual", "sharpness_converged", "converged", "gap", "s_min", "upper_line", "kappa", "a",
                "lambda_max", "critical_step", "min_loss")
"""The columns of :func:`run_grid`'s table, in order."""

GRID_DTYPES = {"steps": "int64", "rep": "int64", "seed": "int64", "diverged": bool, "sharpness_init_converged": bool,
               "sharpness_converged": bool, "converged": bool}
"""The grid's integer and flag columns: a table that mixes the grid with other rows (Fig. 1's trace)
pads them with NaN, which makes them float or object."""


def grid_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The grid's rows of ``table`` (``part == "grid"``) as :func:`run_grid` returned them: its
    columns, in its order and dtypes, indexed from 0 (also for a table read back from the store)."""
    grid = table.loc[table.part == "grid", list(GRID_COLUMNS)]
    return grid.astype(GRID_DTYPES).reset_index(drop=True)


# ------------------------------------------------------------------------------------ Fig. 1's runs


@dataclass(frozen=True)
class Fig1Config(GridConfig):
    """Fig. 1: the plain L = 10 grid (a, b), and a few runs traced along training (c, d)."""

    depth: int = 10
    n: int = 50
    d: int = 5
    lrs: tuple[float, ...] = (0.005, 0.02, 0.07, 0.1, 0.2)  # full-batch GD step (mean loss, no ½)
    steps: tuple[int, ...] = (40_000, 10_000, 4_000, 4_000, 2_000)
    repetitions: tuple[int, ...] = (20, 20, 20, 20, 80)
    scale_min: float = 0.25
    scale_max: float = 0.6
    num_scales: int = 10
    converged_tol: float = 1e-8  # converged: ‖w_e − w*‖² ≤ this (‖w*‖ = 1)
    trace_lrs: tuple[float, ...] = (0.02, 0.1)  # Fig. 1(c, d)
    trace_scale: float = 0.35
    trace_steps: int = 450
    trace_every: int = 5  # sharpness along training every k steps
    trace_reps: int = 5

    MEMORY_FIELDS: ClassVar[tuple[str, ...]] = ("depth", "d", "repetitions", "num_scales", "trace_reps")

    def max_runs(self) -> int:
        """Runs trained side by side at most: a grid step size's ensemble, or the traced runs."""
        return max(super().max_runs(), self.trace_reps * len(self.trace_lrs))

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.kind == "deep_linear" and self.activation == "none",
                "Fig. 1 is the plain deep linear grid: kind 'deep_linear', activation 'none' (mc2024-resnet and "
                "mc2024-gelu are the others)")
        require(len(self.trace_lrs) >= 1 and all(v > 0 for v in self.trace_lrs), "trace_lrs must be positive")
        require(self.trace_steps >= 1 and self.trace_every >= 1 and self.trace_reps >= 1,
                "trace_steps, trace_every and trace_reps must be ≥ 1")


FIG1_PRESETS = {
    "tiny": Fig1Config(lrs=(0.02, 0.1), steps=(600, 200), repetitions=(1, 2), num_scales=3, trace_steps=60,
                       trace_reps=1),
    "quick": Fig1Config(repetitions=(2, 2, 2, 2, 6)),
    "full": Fig1Config(),
}
"""The presets of Fig. 1's runs: ``mc2024-fig1`` trains them, ``mc2024-fig3`` reads them."""


# ------------------------------------------------------------------------------------ claims


def spearman(x, y) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value (scipy); NaN when undefined."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), float("nan")
    r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


def sharpness_claims(grid: pd.DataFrame, tag: str, small_lrs: int = 2) -> list[Claim]:
    """Claims every plain/residual grid shares: the S_min floor, the 2/η ceiling, small-scale flatness."""
    s_min, kappa = float(grid.s_min.iloc[0]), float(grid.kappa.iloc[0])
    conv = grid[grid.converged & grid.sharpness_converged]
    out = []
    if len(conv):
        out.append(Claim(
            name=f"{tag}: no minimizer flatter than S_min",
            statement="every minimizer has sharpness ≥ S_min = 2La‖w*‖^{2−2/L}",
            source=f"{SOURCE}, result 1 (lower bound)",
            measured=float((conv.sharpness / s_min).min()), relation=">=", bound=1 - 1e-3,
            basis=f"min S/S_min over the {len(conv)} converged runs (‖w_e − w*‖² ≤ converged_tol), S certified "
                  f"by residual; 1e-3 (ours) covers the residual and the distance to the minimizer",
        ))
        ceiling = conv.sharpness * conv.lr / 2
        out.append(Claim(
            name=f"{tag}: converged runs have S ≤ 2/η",
            statement="GD can only settle at minimizers with S ≤ 2/η",
            source=f"{SOURCE}, result 5 (linear stability)",
            measured=float(ceiling.max()), relation="<=", bound=1 + 1e-3,
            basis="max over converged runs of S·η/2; 1e-3 (ours) for the residual",
        ))
    lrs = sorted(grid.lr.unique())[:small_lrs]
    smallest = grid[(grid.scale == grid.scale.min()) & grid.lr.isin(lrs) & grid.converged]
    if len(smallest):
        ratio = float((smallest.sharpness / s_min).max())
        out.append(Claim(
            name=f"{tag}: small init → S within 1.5× S_min",
            statement="from small scale at small η, GD finds minimizers within a constant of S_min",
            source=f"{SOURCE}, result 2 (independent replication: ≈1.1×)",
            measured=ratio, relation="<=", bound=1.5,
            basis=f"max S/S_min over converged runs at the smallest scale ({grid.scale.min():.3g}) and η ∈ {lrs}",
        ))
        out.append(Claim(
            name=f"{tag}: small init → S below 4κ·S_min",
            statement="the constant depends on κ only: S ≤ 4κ·S_min (the line 8LΛ for ‖w*‖ = 1)",
            source=f"{SOURCE}, result 2 and the 8LΛ line",
            measured=ratio, relation="<=", bound=4 * kappa,
            basis=f"same runs; κ = {kappa:.3g}",
        ))
    return out


# ------------------------------------------------------------------------------------ figures


def plot_grid_panels(ax_dist, ax_sharp, grid: pd.DataFrame, title_prefix: str = "") -> None:
    """Fig. 1(a, b): median distance to w* and median sharpness vs init scale, per η."""
    s_min, upper = float(grid.s_min.iloc[0]), float(grid.upper_line.iloc[0])
    for lr, g in grid.groupby("lr"):
        agg = g.groupby("scale").agg(distance=("distance", "median"), sharpness=("sharpness", "median"),
                                     sharpness_init=("sharpness_init", "median"))
        line = ax_dist.semilogy(agg.index, agg.distance, "o-", ms=3, label=f"η = {lr:g}")[0]
        ax_sharp.semilogy(agg.index, agg.sharpness, "o-", ms=3, color=line.get_color(), label=f"η = {lr:g}")
        ax_sharp.axhline(2 / lr, color=line.get_color(), ls=":", lw=0.8)
    init = grid.groupby("scale").sharpness_init.median()
    ax_sharp.semilogy(init.index, init, "k--", lw=1, label="at init")
    ax_sharp.axhline(s_min, color="k", lw=1.2, label="S_min")
    ax_sharp.axhline(upper, color="grey", lw=1.2, ls="-.", label="8LΛ")
    ax_dist.set(xlabel="init scale", ylabel="‖w_e − w*‖² (median)", title=f"{title_prefix}(a) distance to w*")
    ax_sharp.set(xlabel="init scale", ylabel="sharpness (median)",
                 title=f"{title_prefix}(b) sharpness after training (dotted: 2/η)")
    ax_sharp.legend(ncol=2)


def grid_figure(table: pd.DataFrame, title_prefix: str):
    """Fig. 1(a, b)'s two panels for another grid (residual init, GELU)."""
    from ...plots import figure

    fig, axes = figure(ncols=2, nrows=1, width=3.8)
    plot_grid_panels(axes[0, 0], axes[0, 1], table, title_prefix=title_prefix)
    return fig
