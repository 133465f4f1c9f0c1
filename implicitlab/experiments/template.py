"""``template``: the experiment to copy — GD on least squares converges exactly below the step 2/S.

Adding an experiment is one new module like this one plus one line in
:data:`implicitlab.experiments.EXPERIMENTS` (``template.EXPERIMENT,``). A module holds, top to bottom:

1. a frozen config dataclass: every field with its unit in a comment, validated in ``__post_init__``
   (a bad ``--set`` or sweep value fails before anything runs);
2. ``PRESETS``: ``tiny`` (a smoke test, well under a second), ``quick`` (the checked numbers),
   ``full`` (the paper's setting);
3. ``run(cfg, *, device, progress) -> DataFrame``: pure — no files, no globals, no printing; the same
   config gives the same table; ``progress(fraction)`` is optional;
4. ``plot(table) -> Figure`` and ``claims(table) -> list[Claim]``: read only the table (they run
   again on a table read back from the store, never retrain);
5. ``EXPERIMENT``, the record that the list holds. It is tagged ``demo``, so ``implicitlab check``
   and ``implicitlab run all`` skip it (``implicitlab run template`` runs it); drop the tag in a copy.

A figure that is another view of an experiment's runs trains nothing: declare ``run=None``,
``view_of="<that experiment>"`` and ``derive(source_table, cfg) -> table`` (see
:class:`~implicitlab.experiments.experiment.Experiment` and ``marion_chizat2024/fig3.py``).

The science here is textbook. Full-batch GD on the mean square loss L(w) = (1/n)‖Xw − y‖² (no ½),
whose Hessian is H = 2XᵀX/n, multiplies the error w − w_ls along each eigenvector of H by
(1 − η h_i) per step. So it converges exactly when η < 2/S, S = λ_max(H) the sharpness (Nesterov
2004, *Introductory Lectures on Convex Optimization*, §1.2.3; the threshold of Cohen et al. 2021,
§2). Step sizes are given as fractions of 2/S, the runs above 1 being the control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..config import dtype_of, require, require_positive
from ..models import Architecture, Ensemble
from ..seeds import derive_seed
from ..train import every, gradient_descent, loss_probe
from .claims import Claim, Control, Threshold
from .experiment import Experiment

SOURCE = "GD on a quadratic (Nesterov 2004, §1.2.3)"


@dataclass(frozen=True)
class TemplateConfig:
    n: int = 100  # examples; n > d, so the least-squares solution w_ls is unique
    d: int = 5  # input dimension = parameters of the linear predictor
    step_fractions: tuple[float, ...] = (0.5, 0.9, 1.1, 1.5)  # η in units of 2/S, one run each
    num_steps: int = 200  # full-batch GD steps
    probe_every: int = 10  # loss recorded every k steps (and at the last)
    init_scale: float = 1.0  # initial weights init_scale · N(0, 1)
    seed: int = 0  # initialisation of run i: derive_seed(seed, "init", i)
    data_seed: int = 0  # X ~ N(0, 1), y = X w_true + N(0, 1)
    dtype: str = "float64"

    def __post_init__(self) -> None:
        require(self.d >= 1 and self.n > self.d, f"need n > d ≥ 1, got n = {self.n}, d = {self.d}")
        require(len(self.step_fractions) > 0 and all(c > 0 for c in self.step_fractions),
                f"step_fractions must be positive, got {self.step_fractions}")
        require(self.num_steps >= 1 and self.probe_every >= 1, "num_steps and probe_every must be ≥ 1")
        require_positive("init_scale", self.init_scale)
        dtype_of(self.dtype)


PRESETS = {
    "tiny": TemplateConfig(n=50, num_steps=100),
    "quick": TemplateConfig(),
    "full": TemplateConfig(n=1_000, d=20, step_fractions=(0.25, 0.5, 0.9, 0.99, 1.01, 1.1, 1.5), num_steps=2_000),
}


def run(cfg: TemplateConfig, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    """One row per run and recorded step: ``step, loss, diverged, step_fraction, lr, sharpness, min_loss``,
    and at the last step ``distance`` = ‖w − w_ls‖/‖w_ls‖ (NaN elsewhere)."""
    rng = np.random.default_rng(cfg.data_seed)
    Xn = rng.standard_normal((cfg.n, cfg.d))  # (n, d)
    yn = Xn @ rng.standard_normal(cfg.d) + rng.standard_normal(cfg.n)  # (n,)
    w_ls = np.linalg.lstsq(Xn, yn, rcond=None)[0]  # (d,) exact reference
    sharpness = float(np.linalg.eigvalsh(2 * Xn.T @ Xn / cfg.n)[-1])  # S = λ_max(H), exact
    dtype = dtype_of(cfg.dtype)
    X, y = torch.tensor(Xn, dtype=dtype, device=device), torch.tensor(yn, dtype=dtype, device=device)
    lrs = [c * 2 / sharpness for c in cfg.step_fractions]
    ens = Ensemble.create(Architecture("deep_linear", d_in=cfg.d, depth=1), [cfg.init_scale] * len(lrs),
                          [derive_seed(cfg.seed, "init", i) for i in range(len(lrs))], dtype=dtype, device=device)
    res = gradient_descent(ens, "square", X, y, lr=torch.tensor(lrs, dtype=dtype, device=device),
                           num_steps=cfg.num_steps, probe_steps=every(cfg.probe_every, cfg.num_steps),
                           probes=(loss_probe,), progress=(lambda s, n: progress(s / n)) if progress else None)
    with torch.no_grad():
        error = ens.end_to_end()[:, 0, :] - torch.tensor(w_ls, dtype=dtype, device=device)  # (R, d)
        distance = (torch.linalg.vector_norm(error, dim=-1) / float(np.linalg.norm(w_ls))).cpu().numpy()  # (R,)
    table = res.table
    run_index = table.run.to_numpy()
    table["step_fraction"] = np.asarray(cfg.step_fractions)[run_index]
    table["lr"] = np.asarray(lrs)[run_index]
    table["sharpness"] = sharpness
    table["min_loss"] = float(np.mean((Xn @ w_ls - yn) ** 2))
    table["distance"] = np.where(table.step == cfg.num_steps, distance[run_index], np.nan)
    if progress:
        progress(1.0)
    return table


def plot(table: pd.DataFrame) -> Figure:
    from ..plots import figure

    fig, axes = figure(ncols=1, nrows=1, width=4.2)
    for c, g in table.groupby("step_fraction"):
        axes[0, 0].semilogy(g.step, g.loss - g.min_loss, "-" if c < 1 else "--", label=f"η = {c:g} · 2/S")
    axes[0, 0].set(xlabel="step", ylabel="L(w) − L(w_ls)", title="GD on least squares (dashed: η > 2/S)")
    axes[0, 0].legend()
    return fig


THRESHOLDS = {
    # every number a verdict depends on, with its source: "paper: …", "exact: …" or "ours: <why>"
    "fraction of runs below 2/S whose loss shrank": Threshold(
        1.0, "exact: below 2/S every mode of GD on a quadratic contracts (Nesterov 2004, §1.2.3)"),
    "distance to w_ls": Threshold(
        1e-6, "ours: far above float64 rounding, far below the error left by a run that has not converged"),
}


def claims(table: pd.DataFrame) -> list[Claim]:
    """A prediction with its negative control, and a consistency check (see ``experiments/claims.py``)."""
    first, last = table[table.step == 0], table[table.step == table.step.max()]
    shrank = ~last.diverged.to_numpy() & ((last.loss - last.min_loss).to_numpy()
                                          < (first.loss - first.min_loss).to_numpy())
    below = (last.step_fraction < 1).to_numpy()
    converging = last[below]
    return [
        Claim(
            name="GD converges below the step 2/S",
            statement="GD on a quadratic converges for every η < 2/S, S = λ_max(H)",
            source=f"{SOURCE}; Cohen et al. 2021, §2",
            measured=float(shrank[below].mean()) if below.any() else float("nan"), relation=">=", bound=1.0,
            basis=f"fraction of the {int(below.sum())} runs with η < 2/S whose excess loss L − L(w_ls) shrank "
                  f"over {int(last.step.max())} steps (S exact, from eigvalsh)",
            kind="prediction",
            # the same statistic and rule where the statement should not hold: the runs above 2/S
            control=Control("the runs with η > 2/S", float(shrank[~below].mean()) if (~below).any() else float("nan"),
                            note="above 2/S the top mode grows, so their loss should not shrink"),
        ),
        Claim(
            name="below 2/S, GD reaches the least-squares solution",
            statement="the limit of a converging run is the unique minimizer w_ls = X⁺y (n > d)",
            source=SOURCE,
            measured=float(converging.distance.max()) if len(converging) else float("nan"), relation="<=",
            bound=1e-6,
            basis="max ‖w − w_ls‖/‖w_ls‖ at the last step over the runs with η < 2/S",
            kind="identity",  # it follows from the setup (a strictly convex quadratic): it checks our code
        ),
    ]


EXPERIMENT = Experiment(
    name="template",
    title="Template: GD on least squares converges exactly below the step 2/S (copy this module)",
    paper="textbook (Nesterov 2004)",
    config_type=TemplateConfig,
    presets=PRESETS,
    run=run,
    plot=plot,
    claims=claims,
    description=__doc__ or "",
    tags=("demo",),
    thresholds=THRESHOLDS,
)
