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

from ..claims import Claim, Control, Threshold
from ..experiment import Experiment
from .common import SHUFFLE_SEED, SOURCE, TREND_ALPHA, GridConfig, run_grid, trend_claim

PRESETS = {
    "tiny": GridConfig(lrs=(0.01,), steps=(1_500,), repetitions=(2,), num_scales=4),
    "quick": GridConfig(repetitions=(8, 4, 4)),
    "full": GridConfig(),
}


def run(cfg: GridConfig, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    """The grid (:func:`.common.run_grid`): one row per run."""
    return run_grid(cfg, device=device, progress=progress)


def gap_fit(table: pd.DataFrame, shuffle_seed: int | None = None) -> dict[str, float]:
    """Least-squares fit of log(gap) on log(S) over converged runs with a positive gap; ``p`` is the
    one-sided p-value of a positive slope. ``shuffle_seed``: the same fit after one random re-pairing
    of the gaps with the sharpnesses (the control)."""
    from scipy.stats import linregress

    g = table[table.converged & (table.gap > 0) & (table.sharpness > 0)]
    if len(g) < 3 or g.sharpness.nunique() < 2:
        return {"slope": float("nan"), "r2": float("nan"), "p": float("nan"), "n": len(g)}
    log_gap = np.log(g.gap.to_numpy())
    if shuffle_seed is not None:
        log_gap = np.random.default_rng(shuffle_seed).permutation(log_gap)
    fit = linregress(np.log(g.sharpness.to_numpy()), log_gap, alternative="greater")
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue**2),
            "p": float(fit.pvalue), "n": len(g)}


def claims(table: pd.DataFrame) -> list[Claim]:
    fit, ctl = gap_fit(table), gap_fit(table, shuffle_seed=SHUFFLE_SEED)
    conv = table[table.converged]
    return [
        Claim(
            name="underdetermined: gap grows with sharpness",
            statement="sharper minimizers generalize worse: the generalization gap grows with sharpness",
            source=f"{SOURCE}, Fig. 6",
            measured=fit["p"], relation="<", bound=TREND_ALPHA,
            basis=f"one-sided p-value (scipy linregress) of a positive slope of log(test − train loss) on log S over "
                  f"{fit['n']} converged runs with a positive gap: slope = {fit['slope']:.3g}, r² = {fit['r2']:.3f}; "
                  f"the claim needs p < {TREND_ALPHA:g}",
            control=Control(setting=f"the same fit after one random re-pairing of gaps and sharpnesses "
                                    f"(seed {SHUFFLE_SEED})", measured=ctl["p"],
                            note=f"slope = {ctl['slope']:.3g}; no relation by construction, passes with probability "
                                 f"{TREND_ALPHA:g}"),
            seeds=int(fit["n"]), rule=f"one-sided test of the slope across the {fit['n']} runs, p < {TREND_ALPHA:g}",
            no_data_reason=f"fewer than 3 converged runs with a positive gap ({fit['n']}) or one sharpness value",
        ),
        trend_claim("underdetermined: sharpness grows with init scale", "larger init scales reach sharper minimizers",
                    f"{SOURCE}, Fig. 6 (left)", conv.scale, conv.sharpness, increasing=True,
                    what="init scale, final sharpness of the converged runs"),
    ]


THRESHOLDS = {
    "trend test level": Threshold(TREND_ALPHA, "ours: the conventional 5% level, one-sided"),
    "shuffle seed": Threshold(SHUFFLE_SEED, "ours: the seed of the one re-pairing the controls test"),
    "converged_tol": Threshold(1e-8, "ours: train loss within 1e-8 of its minimum (every interpolant is a minimizer)"),
}


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
                          label=f"slope {fit['slope']:.2f}, r² {fit['r2']:.2f}, one-sided p {fit['p']:.1g}")
    axes[0, 0].set(xlabel="init scale", ylabel="sharpness (median, converged)", title="Fig. 6: sharpness vs scale")
    axes[0, 1].set(xlabel="sharpness", ylabel="test − train loss", title="generalization gap vs sharpness")
    axes[0, 0].legend()
    axes[0, 1].legend()
    return fig


EXPERIMENT = Experiment(
    name="mc2024-fig6",
    title="Underdetermined deep linear regression: sharpness vs scale, generalization gap vs sharpness (Fig. 6)",
    paper=SOURCE, config_type=GridConfig, presets=PRESETS, run=run, plot=plot, claims=claims,
    description=__doc__ or "", thresholds=THRESHOLDS,
)
