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
from ..claims import Claim, Control, Threshold

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


def spearman(x, y, alternative: str = "two-sided") -> tuple[float, float]:
    """Spearman's rank correlation and its p-value (scipy; ``alternative`` "two-sided", "greater" or
    "less"); NaN when undefined."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), float("nan")
    r = spearmanr(x, y, alternative=alternative)
    return float(r.statistic), float(r.pvalue)


TREND_ALPHA = 0.05
SHUFFLE_SEED = 0


def trend_claim(name: str, statement: str, source: str, x, y, *, increasing: bool, what: str,
                alpha: float = TREND_ALPHA, shuffle_seed: int = SHUFFLE_SEED) -> Claim:
    """A monotone-trend prediction: the one-sided Spearman test in the predicted direction, p < ``alpha``.

    The sign of ρ alone passes half the time under the null; the p-value is the measurement. The control
    is the same test on one random re-pairing of ``y`` with ``x`` (numpy ``default_rng(shuffle_seed)``):
    no trend there by construction, so its p is uniform and it passes with probability ``alpha``.
    """
    x, y = np.array(x, dtype=float), np.array(y, dtype=float)  # copies: a table's column may be read-only
    alternative = "greater" if increasing else "less"
    rho, p = spearman(x, y, alternative)
    y_shuffled = np.random.default_rng(shuffle_seed).permutation(y)
    rho_c, p_c = spearman(x, y_shuffled, alternative)
    direction = "positive" if increasing else "negative"
    return Claim(
        name=name, statement=statement, source=source, measured=p, relation="<", bound=alpha,
        basis=f"one-sided Spearman test that ρ({what}) is {direction} over {len(x)} runs: ρ = {rho:.3f}, "
              f"p = {p:.2g} (the claim needs p < {alpha:g}; the sign of ρ alone would pass half the time "
              "under the null)",
        kind="prediction",
        control=Control(setting=f"the same test on one random re-pairing of the {len(x)} runs (seed {shuffle_seed})",
                        measured=p_c, note=f"ρ = {rho_c:.3f}; no trend by construction, so this control "
                                           f"passes with probability {alpha:g}"),
        seeds=len(x), rule=f"one-sided Spearman test across the {len(x)} runs, p < {alpha:g}",
        no_data_reason="" if np.isfinite(p) else
        f"ρ is undefined: fewer than 3 runs ({len(x)}) or no variation in {what}",
    )


FLOOR_TOL = 1e-3
"""S/S_min ≥ 1 − FLOOR_TOL and S·η/2 ≤ 1 + FLOOR_TOL: the sharpness is certified to a relative residual
of 1e-6 and a converged run is within ‖w_e − w*‖² ≤ 1e-8 of a minimizer; 1e-3 covers both with room."""
SMALL_INIT_FACTOR = 1.5
"""The constant of result 2 at small init, read from the independent replication's ≈1.1× (the paper
gives only "a constant depending on κ"; its line is 4κ)."""


def grid_thresholds(kappa_note: str = "κ of the data draw (≈ 2.78 for the data of Fig. 1)") -> dict[str, Threshold]:
    """The numbers :func:`sharpness_claims` depends on, with their sources."""
    return {
        "S_min": Threshold("2La‖w*‖^{2−2/L}", "paper: result 1 (reconstructed constant, "
                                             "marion-chizat-2024.md; exact for d = 1)"),
        "floor / ceiling tolerance": Threshold(FLOOR_TOL, "ours: covers the certified residual (1e-6 relative) "
                                                          "and the distance to the minimizer (≤ 1e-8)"),
        "converged_tol": Threshold(1e-8, "ours: ‖w_e − w*‖² ≤ 1e-8 (‖w*‖ = 1) counts as converged"),
        "critical step": Threshold("2/S_min", "paper: result 5 (GD cannot converge for η > 2/S_min)"),
        "no convergence above 2/S_min": Threshold(0.0, "exact: a fraction that must be zero"),
        "small-init constant": Threshold(SMALL_INIT_FACTOR, "ours: from the independent replication's ≈1.1×; "
                                                            "the paper states only a κ-dependent constant"),
        "4κ line": Threshold("4κ·S_min = 8LΛ (‖w*‖ = 1)", f"paper: the 8LΛ line of Fig. 1(b); {kappa_note}"),
    }


def _with_reason(value: float, reason: str) -> dict:
    return {"measured": value, "no_data_reason": "" if np.isfinite(value) else reason}


def sharpness_claims(grid: pd.DataFrame, tag: str, small_lrs: int = 2, floor_control_reason: str = "") -> list[Claim]:
    """Claims every plain/residual grid shares: the S_min floor, the 2/η ceiling (a consistency check),
    no convergence above 2/S_min, small-scale flatness.

    Every claim is returned, with verdict ``no data`` and the reason when no run can be measured (a
    claim never disappears). Controls: the S_min floor against the same runs' sharpness at
    initialisation (not minimizers) — unless ``floor_control_reason`` says why that is no contrast
    (the residual initialisation is itself sharper than S_min); convergence above 2/S_min against the step sizes below
    (2/S_min)/2; small-init flatness against the largest init scale at which a run converged at
    the same step sizes (the paper's large vs small init).
    """
    s_min, kappa = float(grid.s_min.iloc[0]), float(grid.kappa.iloc[0])
    crit = float(grid.critical_step.iloc[0])
    conv = grid[grid.converged & grid.sharpness_converged]
    no_conv = f"no run converged with a certified sharpness (of {len(grid)})"
    init_ok = conv[conv.sharpness_init_converged]
    out = [Claim(
        name=f"{tag}: no minimizer flatter than S_min",
        statement="every minimizer has sharpness ≥ S_min = 2La‖w*‖^{2−2/L}",
        source=f"{SOURCE}, result 1 (lower bound)",
        **_with_reason(float((conv.sharpness / s_min).min()) if len(conv) else float("nan"), no_conv),
        relation=">=", bound=1 - FLOOR_TOL,
        basis=f"min S/S_min over the {len(conv)} converged runs, S certified by residual; tolerance "
              f"{FLOOR_TOL:g} (ours) for the residual and the distance to the minimizer",
        control=None if floor_control_reason else Control(
            setting="the same runs at initialisation (points that are not minimizers)",
            measured=float((init_ok.sharpness_init / s_min).min()) if len(init_ok) else float("nan"),
            note="the bound is about minimizers: elsewhere the sharpness may be lower"),
        control_reason=floor_control_reason,
        seeds=len(conv), rule=f"minimum over all {len(conv)} converged runs",
    )]
    ceiling = conv.sharpness * conv.lr / 2
    out.append(Claim(
        name=f"{tag}: converged runs have S ≤ 2/η",
        statement="a run that converged sits at a minimizer with S ≤ 2/η (a fixed point of GD with S > 2/η "
                  "is linearly unstable, so selecting converged runs implies it)",
        source=f"{SOURCE}, result 5 (linear stability)",
        **_with_reason(float(ceiling.max()) if len(conv) else float("nan"), no_conv),
        relation="<=", bound=1 + FLOOR_TOL, kind="identity",
        basis=f"max over the {len(conv)} converged runs of S·η/2; tolerance {FLOOR_TOL:g} (ours) for the residual",
        seeds=len(conv), rule=f"maximum over all {len(conv)} converged runs",
    ))
    above, below = grid[grid.lr > crit], grid[grid.lr <= crit / 2]
    out.append(Claim(
        name=f"{tag}: no convergence above 2/S_min",
        statement="GD must fail to converge when η > 2/S_min (every minimizer has S ≥ S_min > 2/η)",
        source=f"{SOURCE}, results 1 and 5",
        **_with_reason(float(above.converged.mean()) if len(above) else float("nan"),
                       f"no step size of the grid is above the critical step 2/S_min = {crit:.4g}"),
        relation="<=", bound=0.0,
        basis=f"fraction of the {len(above)} runs with η > 2/S_min = {crit:.4g} "
              f"(η ∈ {sorted(float(v) for v in above.lr.unique())}) that converged",
        control=Control(setting=f"the {len(below)} runs with η ≤ (2/S_min)/2 = {crit / 2:.4g} "
                                f"(η ∈ {sorted(float(v) for v in below.lr.unique())})",
                        measured=float(below.converged.mean()) if len(below) else float("nan")),
        seeds=len(above), rule=f"none of the {len(above)} runs above 2/S_min converges",
    ))
    lrs = [float(v) for v in sorted(grid.lr.unique())[:small_lrs]]
    at_lrs = grid[grid.lr.isin(lrs)]
    smallest_scale = float(grid.scale.min())
    smallest = at_lrs[(at_lrs.scale == smallest_scale) & at_lrs.converged & at_lrs.sharpness_converged]
    n_at = int((at_lrs.scale == smallest_scale).sum())
    ratio = float((smallest.sharpness / s_min).max()) if len(smallest) else float("nan")
    large_conv = at_lrs[at_lrs.converged & at_lrs.sharpness_converged & (at_lrs.scale > smallest_scale)]
    large_scale = float(large_conv.scale.max()) if len(large_conv) else float("nan")
    large = large_conv[large_conv.scale == large_scale]
    control_ratio = float((large.sharpness / s_min).max()) if len(large) else float("nan")
    no_small = (f"none of the {n_at} runs at the smallest scale ({smallest_scale:.3g}) and η ∈ {lrs} converged "
                "with a certified sharpness")
    control = Control(setting=f"the largest init scale at which a run converged at η ∈ {lrs} "
                              f"({large_scale:.3g}; {len(large)} runs)", measured=control_ratio,
                      note="large vs small init: the paper's contrast (sharp minimizers from large scales)")
    common_basis = (f"max S/S_min over the {len(smallest)} of {n_at} runs at the smallest scale "
                    f"({smallest_scale:.3g}) and η ∈ {lrs} that converged")
    out.append(Claim(
        name=f"{tag}: small init → S within 1.5× S_min",
        statement="from small scale at small η, GD finds minimizers within a constant of S_min",
        source=f"{SOURCE}, result 2 (independent replication: ≈1.1×)",
        **_with_reason(ratio, no_small), relation="<=", bound=SMALL_INIT_FACTOR,
        basis=f"{common_basis}; the constant {SMALL_INIT_FACTOR:g} is ours, from the replication's ≈1.1×",
        control=control, seeds=len(smallest), rule=f"maximum over the {len(smallest)} converged runs",
    ))
    out.append(Claim(
        name=f"{tag}: small init → S below 4κ·S_min",
        statement="the constant depends on κ only: S ≤ 4κ·S_min (the line 8LΛ for ‖w*‖ = 1)",
        source=f"{SOURCE}, result 2 and the 8LΛ line",
        **_with_reason(ratio, no_small), relation="<=", bound=4 * kappa,
        basis=f"{common_basis}; κ = {kappa:.3g}",
        control=control, seeds=len(smallest), rule=f"maximum over the {len(smallest)} converged runs",
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
