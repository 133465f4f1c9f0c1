"""``mc2024-fig3``: the probability of divergence vs init scale, per step size — a view of Fig. 1's runs.

Marion & Chizat 2024, Fig. 3 (``marion-chizat-2024.md``): "same runs as 1ab". This experiment
trains nothing: it is declared ``view_of="mc2024-fig1"``, and its table is the grid rows of the
table ``mc2024-fig1`` returns for the same config (:func:`derive`), so ``implicitlab run`` and
``implicitlab check`` run (or reuse from the store) Fig. 1 and read Fig. 3 from it. A run diverged
when its loss became NaN/inf.
"""

from __future__ import annotations

import pandas as pd

from ..claims import Claim, Threshold
from ..experiment import Experiment
from .common import FIG1_PRESETS, SHUFFLE_SEED, SOURCE, TREND_ALPHA, Fig1Config, grid_rows, trend_claim

PRESETS = FIG1_PRESETS


def derive(fig1_table: pd.DataFrame, cfg: Fig1Config) -> pd.DataFrame:
    """The per-run rows of ``mc2024-fig1``'s table for ``cfg`` (its grid; the traces dropped)."""
    return grid_rows(fig1_table)


def claims(table: pd.DataFrame) -> list[Claim]:
    """Two trend predictions, each a one-sided Spearman test with a shuffled-pairing control
    (:func:`.common.trend_claim`); the divergence indicator is 1 for a diverged run."""
    diverged = table.diverged.astype(float)
    return [
        trend_claim("divergence rises with init scale",
                    "the probability that GD diverges rises with the init scale", f"{SOURCE}, Fig. 3",
                    table.scale, diverged, increasing=True, what="init scale, divergence indicator"),
        trend_claim("divergence rises with step size", "the probability that GD diverges rises with η",
                    f"{SOURCE}, Fig. 3", table.lr, diverged, increasing=True, what="η, divergence indicator"),
    ]


THRESHOLDS = {
    "trend test level": Threshold(TREND_ALPHA, "ours: the conventional 5% level of a one-sided Spearman test"),
    "shuffle seed": Threshold(SHUFFLE_SEED, "ours: the seed of the one re-pairing the control tests"),
}


def plot(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=1, nrows=1, width=4.2)
    for lr, g in table.groupby("lr"):
        p = g.groupby("scale").diverged.mean()
        axes[0, 0].plot(p.index, p, "o-", ms=3, label=f"η = {lr:g}")
    axes[0, 0].set(xlabel="init scale", ylabel="P(divergence)", title="Fig. 3: probability of divergence",
                   ylim=(-0.05, 1.05))
    axes[0, 0].legend()
    return fig


EXPERIMENT = Experiment(
    name="mc2024-fig3",
    title="Probability of divergence vs init scale, per step size (Fig. 3; the runs of Fig. 1)",
    paper=SOURCE, config_type=Fig1Config, presets=PRESETS, run=None, plot=plot, claims=claims,
    description=__doc__ or "", view_of="mc2024-fig1", derive=derive, thresholds=THRESHOLDS,
)
