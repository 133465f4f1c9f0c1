"""``mc2024-fig6``: underdetermined deep linear regression — sharpness vs scale, generalization gap vs sharpness.

Marion & Chizat 2024, Fig. 6 (``marion-chizat-2024.md``): plain L = 5, n = 15, d = 20;
η ∈ {0.001, 0.004, 0.01} with {40k, 10k, 4k} steps and {100, 20, 20} repetitions, scales
linspace(0.1, 0.36, 9) (the defaults of :class:`.common.GridConfig`): sharpness vs scale, and the
generalization gap (test − train loss) vs sharpness on log–log axes with the fitted slope, r² and
p-value. Every interpolant is a minimizer here, so flatter minimizers can be compared by their gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..claims import Claim
from ..experiment import Experiment
from .common import SOURCE, GridConfig, run_grid, spearman

PRESETS = {
    "tiny": GridConfig(lrs=(0.01,), steps=(1_500,), repetitions=(2,), num_scales=4),
    "quick": GridConfig(repetitions=(8, 4, 4)),
    "full": GridConfig(),
}


def run(cfg: GridConfig, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    """The grid (:func:`.common.run_grid`): one row per run."""
    return run_grid(cfg, device=device, progress=progress)


def gap_fit(table: pd.DataFrame) -> dict[str, float]:
    """Least-squares fit of log(gap) on log(S) over converged runs with a positive gap."""
    from scipy.stats import linregress

    g = table[table.converged & (table.gap > 0) & (table.sharpness > 0)]
    if len(g) < 3 or g.sharpness.nunique() < 2:
        return {"slope": float("nan"), "r2": float("nan"), "p": float("nan"), "n": len(g)}
    fit = linregress(np.log(g.sharpness), np.log(g.gap))
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue**2),
            "p": float(fit.pvalue), "n": len(g)}


def claims(table: pd.DataFrame) -> list[Claim]:
    fit = gap_fit(table)
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


def plot(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=2, nrows=1, width=3.8)
    conv = table[table.converged]
    for lr, g in conv.groupby("lr"):
        med = g.groupby("scale").sharpness.median()
        line = axes[0, 0].semilogy(med.index, med, "o-", ms=3, label=f"η = {lr:g}")[0]
        axes[0, 0].axhline(2 / lr, color=line.get_color(), ls=":", lw=0.8)
        pos = g[g.gap > 0]
        axes[0, 1].loglog(pos.sharpness, pos.gap, "o", ms=2.5, alpha=0.6, color=line.get_color(), label=f"η = {lr:g}")
    fit = gap_fit(table)
    if np.isfinite(fit["slope"]):
        s = np.geomspace(conv.sharpness.min(), conv.sharpness.max(), 20)
        axes[0, 1].loglog(s, np.exp(fit["intercept"]) * s ** fit["slope"], "k-", lw=1,
                          label=f"slope {fit['slope']:.2f}, r² {fit['r2']:.2f}, p {fit['p']:.1g}")
    axes[0, 0].set(xlabel="init scale", ylabel="sharpness (median, converged)", title="Fig. 6: sharpness vs scale")
    axes[0, 1].set(xlabel="sharpness", ylabel="test − train loss", title="generalization gap vs sharpness")
    axes[0, 0].legend()
    axes[0, 1].legend()
    return fig


EXPERIMENT = Experiment(
    name="mc2024-fig6",
    title="Underdetermined deep linear regression: sharpness vs scale, generalization gap vs sharpness (Fig. 6)",
    paper=SOURCE, config_type=GridConfig, presets=PRESETS, run=run, plot=plot, claims=claims,
    description=__doc__ or "",
)
