"""``mc2024-fig6``, ``mc2024-gelu`` and ``mc2024-alignment``.

Marion & Chizat 2024 (``marion-chizat-2024.md``):

- Fig. 6 (underdetermined): plain L = 5, n = 15, d = 20; η ∈ {0.001, 0.004, 0.01} with {40k, 10k, 4k}
  steps and {100, 20, 20} repetitions, scales linspace(0.1, 0.36, 9): sharpness vs scale, and the
  generalization gap (test − train loss) vs sharpness on log–log axes with the fitted slope, r² and
  p-value. Every interpolant is a minimizer here, so flatter minimizers can be compared by their gap.
- GELU: GELU between the layers of the plain L = 10 net, noiseless data; η ∈ {0.005, 0.02, 0.07}
  with {160k, 40k, 16k} steps, 20 repetitions, scales linspace(0.428, 0.7, 8); panels as Fig. 1(a, b).
  The theory is for linear nets; the claim is that GELU behaves qualitatively the same.
- Alignment (result 3; no public code has it): from small scales the learned matrices are
  approximately rank one and consecutive layers align: per layer ‖W_k‖₂/‖W_k‖_F and |v_{k+1}ᵀu_k|
  at the end of training vs init scale, and their evolution along training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ...config import dtype_of, require, require_positive
from ...models import Architecture, Ensemble
from ...train import alignment_probe, every, loss_probe, gradient_descent
from ..claims import Claim
from ..experiment import Experiment
from .common import SOURCE, GridConfig, problem_from_key, run_grid, spearman
from .fig1 import grid_figure


# ------------------------------------------------------------------------------------ Fig. 6

FIG6_PRESETS = {
    "tiny": GridConfig(lrs=(0.01,), steps=(1_500,), repetitions=(2,), num_scales=4),
    "quick": GridConfig(repetitions=(8, 4, 4)),
    "full": GridConfig(),
}


def fig6_fit(table: pd.DataFrame) -> dict[str, float]:
    """Least-squares fit of log(gap) on log(S) over converged runs with a positive gap."""
    from scipy.stats import linregress

    g = table[table.converged & (table.gap > 0) & (table.sharpness > 0)]
    if len(g) < 3 or g.sharpness.nunique() < 2:
        return {"slope": float("nan"), "r2": float("nan"), "p": float("nan"), "n": len(g)}
    fit = linregress(np.log(g.sharpness), np.log(g.gap))
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue**2),
            "p": float(fit.pvalue), "n": len(g)}


def claims_fig6(table: pd.DataFrame) -> list[Claim]:
    fit = fig6_fit(table)
    conv = table[table.converged]
    r, p = spearman(conv.scale, conv.sharpness)
    return [
        Claim(
            name="underdetermined: gap grows with sharpness (slope)",
            statement="sharper minimizers generalize worse: the generalization gap grows with sharpness",
            source=f"{SOURCE}, Fig. 6",
            measured=fit["slope"], relation=">", bound=0.0,
            basis=f"slope of log(test − train loss) on log S over {fit['n']} converged runs (r² = {fit['r2']:.3f})",
        ),
        Claim(
            name="underdetermined: gap–sharpness slope is significant",
            statement="(the same, tested)", source=f"{SOURCE}, Fig. 6",
            measured=fit["p"], relation="<", bound=0.05,
            basis="two-sided p-value of that slope (scipy linregress)",
        ),
        Claim(
            name="underdetermined: sharpness grows with init scale",
            statement="larger init scales reach sharper minimizers",
            source=f"{SOURCE}, Fig. 6 (left)",
            measured=r, relation=">", bound=0.0,
            basis=f"Spearman ρ between init scale and final sharpness over converged runs (p = {p:.2g})",
        ),
    ]


def plot_fig6(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=2, nrows=1, width=3.8)
    conv = table[table.converged]
    for lr, g in conv.groupby("lr"):
        med = g.groupby("scale").sharpness.median()
        line = axes[0, 0].semilogy(med.index, med, "o-", ms=3, label=f"η = {lr:g}")[0]
        axes[0, 0].axhline(2 / lr, color=line.get_color(), ls=":", lw=0.8)
        pos = g[g.gap > 0]
        axes[0, 1].loglog(pos.sharpness, pos.gap, "o", ms=2.5, alpha=0.6, color=line.get_color(), label=f"η = {lr:g}")
    fit = fig6_fit(table)
    if np.isfinite(fit["slope"]):
        s = np.geomspace(conv.sharpness.min(), conv.sharpness.max(), 20)
        axes[0, 1].loglog(s, np.exp(fit["intercept"]) * s ** fit["slope"], "k-", lw=1,
                          label=f"slope {fit['slope']:.2f}, r² {fit['r2']:.2f}, p {fit['p']:.1g}")
    axes[0, 0].set(xlabel="init scale", ylabel="sharpness (median, converged)", title="Fig. 6: sharpness vs scale")
    axes[0, 1].set(xlabel="sharpness", ylabel="test − train loss", title="generalization gap vs sharpness")
    axes[0, 0].legend()
    axes[0, 1].legend()
    return fig


FIG6 = Experiment(
    name="mc2024-fig6",
    title="Underdetermined deep linear regression: sharpness vs scale, generalization gap vs sharpness (Fig. 6)",
    paper=SOURCE, config_type=GridConfig, presets=FIG6_PRESETS, run=run_grid, plot=plot_fig6, claims=claims_fig6,
    description=__doc__ or "",
)


# ------------------------------------------------------------------------------------ GELU

_GELU = dict(depth=10, n=50, d=5, noise=0.0, activation="gelu", scale_min=0.428, scale_max=0.7, num_scales=8)
GELU_PRESETS = {
    "tiny": GridConfig(**{**_GELU, "num_scales": 3}, lrs=(0.07,), steps=(800,), repetitions=(1,)),
    "quick": GridConfig(**{**_GELU, "num_scales": 6}, lrs=(0.07,), steps=(16_000,), repetitions=(3,)),
    "full": GridConfig(**_GELU, lrs=(0.005, 0.02, 0.07), steps=(160_000, 40_000, 16_000), repetitions=(20, 20, 20)),
}


GELU_FITTED = 1e-3  # train loss (‖w*‖ = 1, noiseless: the loss at w* is 0)


def claims_gelu(table: pd.DataFrame) -> list[Claim]:
    # GELU nets fit the data slowly (train loss ~1e-4 after the authors' step counts) and sit at the
    # edge of stability rather than at an exact minimizer, so runs count as fitted below a train loss
    # of GELU_FITTED and the 2/η ceiling gets the 10% edge-of-stability tolerance of Fig. 1(d).
    conv = table[~table.diverged & (table.train_loss <= GELU_FITTED) & table.sharpness_converged]
    out = [Claim(
        name="GELU: fitted runs have S ≤ 2/η",
        statement="as for linear nets, GD only settles where S ≤ 2/η (edge of stability at most)",
        source=f"{SOURCE}, GELU experiment and result 5",
        measured=float((conv.sharpness * conv.lr / 2).max()) if len(conv) else float("nan"),
        relation="<=", bound=1.1,
        basis=f"max S·η/2 over {len(conv)} runs with train loss ≤ {GELU_FITTED:g}; 10% as for the edge of "
              "stability in Fig. 1(d) (ours)",
    )]
    r, p = spearman(conv.scale, conv.sharpness)
    out.append(Claim(
        name="GELU: sharpness grows with init scale",
        statement="GELU networks behave qualitatively like linear ones: larger init scale, sharper minimizer",
        source=f"{SOURCE}, GELU experiment (as Fig. 1b)",
        measured=r, relation=">", bound=0.0,
        basis=f"Spearman ρ between scale and final sharpness over converged runs (p = {p:.2g})",
    ))
    small = conv[conv.scale == conv.scale.min()]
    out.append(Claim(
        name="GELU: small init finds a flat minimizer",
        statement="from small scale the minimizer is nearly as flat as the linear bound S_min",
        source=f"{SOURCE}, GELU experiment (qualitative analogue of result 2)",
        measured=float((small.sharpness / small.s_min).max()) if len(small) else float("nan"),
        relation="<=", bound=float(4 * table.kappa.iloc[0]),
        basis="max S/S_min(linear) at the smallest scale vs the 4κ line of the linear theory — a comparison, "
              "not a theorem for GELU",
    ))
    return out


def plot_gelu(table: pd.DataFrame):
    return grid_figure(table, "GELU: ")


GELU = Experiment(
    name="mc2024-gelu",
    title="GELU between layers (L = 10, noiseless): as Fig. 1(a, b)",
    paper=SOURCE, config_type=GridConfig, presets=GELU_PRESETS, run=run_grid, plot=plot_gelu, claims=claims_gelu,
    description=__doc__ or "",
)


# ------------------------------------------------------------------------------------ alignment


@dataclass(frozen=True)
class AlignmentConfig:
    """Depth 4 by default: the rank-one regime needs s well below 1/d, and at L = 10 such scales
    (s ≲ 0.1) do not leave the saddle at the origin within tens of thousands of steps (the digest's
    replication; we measured min_k ‖W_k‖₂/‖W_k‖_F ≈ 0.64–0.86 at L = 10 from s = 0.12–0.25 after
    40k steps at η = 0.02, whose random part of Frobenius norm ≈ s·d is not small)."""

    depth: int = 4
    n: int = 50
    d: int = 5
    noise: float = 1.0
    data_seed: int = 0
    lr: float = 0.05
    steps: int = 20_000
    scales: tuple[float, ...] = (0.01, 0.03, 0.1, 0.2, 0.3)
    repetitions: int = 10
    probe_every: int = 100  # alignment along training every k steps
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        require_positive("lr", self.lr)
        require(self.steps >= 1 and self.repetitions >= 1 and self.probe_every >= 1, "steps, repetitions, "
                "probe_every must be ≥ 1")
        require(len(self.scales) > 0 and all(s >= 0 for s in self.scales), "scales must be non-negative")
        require(self.depth >= 2, "alignment needs depth ≥ 2")
        dtype_of(self.dtype)


ALIGN_PRESETS = {
    "tiny": AlignmentConfig(steps=1_500, scales=(0.1, 0.3), repetitions=1, probe_every=300),
    "quick": AlignmentConfig(repetitions=3),
    "full": AlignmentConfig(repetitions=20, steps=80_000, lr=0.0125, probe_every=400),
}


def run_alignment(cfg: AlignmentConfig, *, device: torch.device = torch.device("cpu"), progress=None):
    dtype = dtype_of(cfg.dtype)
    P = problem_from_key((cfg.n, cfg.d, cfg.depth, cfg.noise, cfg.data_seed), dtype, device)
    scales = [s for s in cfg.scales for _ in range(cfg.repetitions)]
    seeds = [cfg.seed * 1_000_003 + 31 * i + 5 for i in range(len(scales))]
    ens = Ensemble.create(Architecture("deep_linear", d_in=cfg.d, depth=cfg.depth), scales, seeds, dtype=dtype,
                          device=device)
    res = gradient_descent(ens, "square", P.X, P.y, lr=cfg.lr, num_steps=cfg.steps,
                probe_steps=every(cfg.probe_every, cfg.steps), probes=(loss_probe, alignment_probe),
                progress=(lambda s, n: progress(s / n)) if progress else None)
    t = res.table
    t["scale"] = np.asarray(scales)[t.run.to_numpy()]
    t["seed"] = np.asarray(seeds)[t.run.to_numpy()]
    t["min_loss"] = float(((P.X @ P.w_star - P.y) ** 2).mean())
    return t


def claims_alignment(table: pd.DataFrame) -> list[Claim]:
    last = table[(table.step == table.step.max()) & ~table.diverged]
    conv = last[last.loss - last.min_loss <= 1e-8]
    small = conv[conv.scale == conv.scale.min()]
    out = []
    for col, what in (("rank_one_ratio_min", "‖W_k‖₂/‖W_k‖_F"), ("alignment_min", "|v_{k+1}ᵀu_k|")):
        out.append(Claim(
            name=f"small init: {what} > 0.99",
            statement="from small scale the learned matrices are ~rank one and consecutive layers align",
            source=f"{SOURCE}, result 3",
            measured=float(small[col].min()) if len(small) else float("nan"), relation=">", bound=0.99,
            basis=f"min over layers and over the {len(small)} converged runs at the smallest scale "
                  f"({table.scale.min():g}) at the final step; 0.99 from the issue's reading of 'approximately'",
        ))
    r, p = spearman(conv.scale, conv.rank_one_ratio_min)
    out.append(Claim(
        name="rank-one structure weakens as the scale grows",
        statement="the rank-one structure is a small-initialisation effect",
        source=f"{SOURCE}, result 3",
        measured=r, relation="<", bound=0.0,
        basis=f"Spearman ρ between scale and min_k ‖W_k‖₂/‖W_k‖_F over converged runs (p = {p:.2g})",
    ))
    return out


def plot_alignment(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=3, nrows=1, width=3.5)
    last = table[table.step == table.step.max()]
    agg = last.groupby("scale")[["rank_one_ratio_min", "alignment_min"]].median()
    axes[0, 0].plot(agg.index, agg.rank_one_ratio_min, "o-", ms=3, label="min_k ‖W_k‖₂/‖W_k‖_F")
    axes[0, 0].plot(agg.index, agg.alignment_min, "s-", ms=3, label="min_k |v_{k+1}ᵀu_k|")
    axes[0, 0].axhline(0.99, color="k", ls=":", lw=0.8)
    axes[0, 0].set(xlabel="init scale", ylabel="at the end of training (median)", title="rank one and aligned")
    axes[0, 0].legend()
    for scale, g in table.groupby("scale"):
        med = g.groupby("step")[["rank_one_ratio_min", "alignment_min"]].median()
        axes[0, 1].plot(med.index, med.rank_one_ratio_min, label=f"s = {scale:g}")
        axes[0, 2].plot(med.index, med.alignment_min, label=f"s = {scale:g}")
    axes[0, 1].set(xlabel="step", ylabel="min_k ‖W_k‖₂/‖W_k‖_F", title="along training")
    axes[0, 2].set(xlabel="step", ylabel="min_k |v_{k+1}ᵀu_k|", title="along training")
    axes[0, 1].legend()
    return fig


ALIGNMENT = Experiment(
    name="mc2024-alignment",
    title="Small init: rank-one, aligned layers (result 3), vs init scale and along training",
    paper=SOURCE, config_type=AlignmentConfig, presets=ALIGN_PRESETS, run=run_alignment, plot=plot_alignment,
    claims=claims_alignment, description=__doc__ or "",
)
