"""``mc2024-fig3``: the probability of divergence vs init scale, per step size — a view of Fig. 1's runs.

Marion & Chizat 2024, Fig. 3 (``marion-chizat-2024.md``): "same runs as 1ab". This experiment
trains nothing: it is declared ``view_of="mc2024-fig1"``, and its table is the grid rows of the
table ``mc2024-fig1`` returns for the same config (:func:`derive`), so ``implicitlab run`` and
``implicitlab check`` run (or reuse from the store) Fig. 1 and read Fig. 3 from it. A run diverged
when its loss became NaN/inf.
"""

from __future__ import annotations

import pandas as pd

from ..claims import Claim
from ..experiment import Experiment
from .common import FIG1_PRESETS, SOURCE, Fig1Config, grid_rows, spearman

PRESETS = FIG1_PRESETS


def derive(fig1_table: pd.DataFrame, cfg: Fig1Config) -> pd.DataFrame:
    """The per-run rows of ``mc2024-fig1``'s table for ``cfg`` (its grid; the traces dropped)."""
    return grid_rows(fig1_table)


def claims(table: pd.DataFrame) -> list[Claim]:
    out = []
    r_s, p_s = spearman(table.scale, table.diverged)
    out.append(Claim(
        name="divergence rises with init scale",
        statement="the probability that GD diverges rises with the init scale",
        source=f"{SOURCE}, Fig. 3",
        measured=r_s, relation=">", bound=0.0,
        basis=f"Spearman ρ between scale and the divergence indicator over all {len(table)} runs "
              f"(p = {p_s:.2g}; the claim also needs p < 0.05)" if p_s == p_s else "undefined (no variation)",
    ))
    out.append(Claim(
        name="divergence rise with scale is significant",
        statement="(the same, tested)", source=f"{SOURCE}, Fig. 3",
        measured=p_s, relation="<", bound=0.05, basis="two-sided p-value of that Spearman ρ",
    ))
    r_l, p_l = spearman(table.lr, table.diverged)
    out.append(Claim(
        name="divergence rises with step size",
        statement="the probability that GD diverges rises with η",
        source=f"{SOURCE}, Fig. 3",
        measured=r_l, relation=">", bound=0.0,
        basis=f"Spearman ρ between η and the divergence indicator over all runs (p = {p_l:.2g})",
    ))
    out.append(Claim(
        name="divergence rise with η is significant",
        statement="(the same, tested)", source=f"{SOURCE}, Fig. 3",
        measured=p_l, relation="<", bound=0.05, basis="two-sided p-value of that Spearman ρ",
    ))
    return out


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
    description=__doc__ or "", view_of="mc2024-fig1", derive=derive,
)
