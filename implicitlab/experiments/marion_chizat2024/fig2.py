"""``mc2024-fig2``: residual nets of depth 5–40 train only below the critical step 2/S_min.

Marion & Chizat 2024, Fig. 2 (``marion-chizat-2024.md``): residual init W_k = I + (s/√(Ld)) N_k,
L ∈ {5, 10, 20, 40}, η = logspace(−2, −0.3, 25), 1000 steps, 50 repetitions, s = 0.25: final
distance vs η with the critical step 2/S_min = 1/(aL) (‖w*‖ = 1) marked; GD cannot converge above
it (every minimizer has S ≥ S_min > 2/η there, result 5), whatever the depth. All step sizes ×
repetitions of one depth train as one ensemble with per-run step sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ...config import dtype_of, require, require_positive
from ...data.synthetic import marion_chizat_regression
from ...models import Architecture, Ensemble
from ...references.deep_linear import deep_linear_sharpness_bound
from ...seeds import derive_seed
from ...train import gradient_descent
from ..claims import Claim, Control, Threshold
from ..experiment import Experiment
from .common import SOURCE


@dataclass(frozen=True)
class Fig2Config:
    depths: tuple[int, ...] = (5, 10, 20, 40)
    n: int = 50
    d: int = 5
    noise: float = 1.0  # σ of the label noise
    data_seed: int = 0
    lr_min_exp: float = -2.0  # η = logspace(lr_min_exp, lr_max_exp, num_lrs)
    lr_max_exp: float = -0.3
    num_lrs: int = 25
    steps: int = 1_000  # GD steps per run
    repetitions: int = 50  # runs per (depth, η)
    scale: float = 0.25  # residual init scale s
    success_tol: float = 1e-8  # training succeeds (converges): ‖w_e − w*‖² ≤ this after `steps`
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        require(len(self.depths) > 0 and all(L >= 1 for L in self.depths), "depths must be ≥ 1")
        require(self.lr_min_exp < self.lr_max_exp, "need lr_min_exp < lr_max_exp")
        require(self.num_lrs >= 2 and self.steps >= 1 and self.repetitions >= 1,
                "num_lrs ≥ 2, steps ≥ 1 and repetitions ≥ 1")
        require(self.scale >= 0, "scale must be ≥ 0")
        require_positive("success_tol", self.success_tol)
        dtype_of(self.dtype)

    @property
    def lrs(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.logspace(self.lr_min_exp, self.lr_max_exp, self.num_lrs))


PRESETS = {
    "tiny": Fig2Config(depths=(5, 10), num_lrs=6, steps=200, repetitions=1),
    "quick": Fig2Config(num_lrs=13, repetitions=4),
    "full": Fig2Config(),
}


def run(cfg: Fig2Config, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    """One row per run: depth, η, seed, final distance to w*, divergence, success, and 2/S_min."""
    dtype = dtype_of(cfg.dtype)
    data = marion_chizat_regression(cfg.n, cfg.d, noise=cfg.noise, seed=cfg.data_seed)
    X = torch.tensor(data["X"], dtype=dtype, device=device)  # (n, d)
    y = torch.tensor(data["y"], dtype=dtype, device=device)  # (n,)
    w_star = torch.tensor(data["w_star"], dtype=dtype, device=device)  # (d,)
    frames = []
    for i, L in enumerate(cfg.depths):
        ref = deep_linear_sharpness_bound(data["X"], data["y"], L)
        lrs = [lr for lr in cfg.lrs for _ in range(cfg.repetitions)]
        seeds = [derive_seed(cfg.seed, "init", L, j) for j in range(len(lrs))]
        ens = Ensemble.create(Architecture("residual", d_in=cfg.d, depth=L), [cfg.scale] * len(lrs), seeds,
                              dtype=dtype, device=device)
        res = gradient_descent(ens, "square", X, y, lr=torch.tensor(lrs, dtype=dtype, device=device),
                               num_steps=cfg.steps)
        with torch.no_grad():
            dist = ((ens.end_to_end()[:, 0, :] - w_star) ** 2).sum(-1).cpu().numpy()
        frames.append(pd.DataFrame({
            "depth": L, "lr": lrs, "seed": seeds, "distance": dist, "diverged": res.diverged,
            "s_min": float(ref.s_min), "critical_step": float(ref.critical_step), "a": float(ref.a),
        }))
        if progress:
            progress((i + 1) / len(cfg.depths))
    out = pd.concat(frames, ignore_index=True)
    out["success"] = ~out.diverged & (out.distance <= cfg.success_tol)
    out["success_tol"] = cfg.success_tol
    return out


SUCCESS_MAJORITY = 0.5
"""'Training succeeds below the critical step' read as: at least half of the runs succeed (ours)."""


def claims(table: pd.DataFrame) -> list[Claim]:
    """Per depth: no success above 2/S_min (control: the runs below half of it) and success below
    half of it (control: the runs above it); the 1/L law of the critical step is an identity."""
    out = []
    for L, g in table.groupby("depth"):
        crit = float(g.critical_step.iloc[0])
        above, below = g[g.lr > crit], g[g.lr <= crit / 2]
        f_above = float(above.success.mean()) if len(above) else float("nan")
        f_below = float(below.success.mean()) if len(below) else float("nan")
        tol = float(g.success_tol.iloc[0])
        set_above = f"the {len(above)} runs with η > 2/S_min = {crit:.4g}"
        set_below = f"the {len(below)} runs with η ≤ (2/S_min)/2 = {crit / 2:.4g}"
        out.append(Claim(
            name=f"L={L}: no success above 2/S_min",
            statement="GD cannot converge when η > 2/S_min = 1/(aL) (‖w*‖ = 1)",
            source=f"{SOURCE}, result 5 and Fig. 2",
            measured=f_above, relation="<=", bound=0.0,
            basis=f"fraction of {set_above} whose ‖w_e − w*‖² ≤ {tol:g}; a minimizer with S > 2/η is linearly "
                  "unstable for GD and every minimizer has S ≥ S_min",
            control=Control(setting=set_below, measured=f_below),
            seeds=len(above), rule=f"none of the {len(above)} runs succeeds",
            no_data_reason=f"no step size of the grid is above 2/S_min = {crit:.4g} at L = {L}",
        ))
        out.append(Claim(
            name=f"L={L}: success below the critical step",
            statement="training succeeds below the critical step",
            source=f"{SOURCE}, Fig. 2",
            measured=f_below, relation=">=", bound=SUCCESS_MAJORITY,
            basis=f"fraction of {set_below} that reach ‖w_e − w*‖² ≤ {tol:g} in the given steps (small η may "
                  f"simply need more steps); 'succeeds' read as a majority, {SUCCESS_MAJORITY:g} (ours)",
            control=Control(setting=set_above, measured=f_above),
            seeds=len(below), rule=f"at least half of the {len(below)} runs succeed",
            no_data_reason=f"no step size of the grid is below (2/S_min)/2 = {crit / 2:.4g} at L = {L}",
        ))
    crit_by_depth = table.groupby("depth").critical_step.first()
    slope = float(np.polyfit(np.log(crit_by_depth.index), np.log(crit_by_depth.to_numpy()), 1)[0]) \
        if len(crit_by_depth) > 1 else float("nan")
    out.append(Claim(
        name="critical step shrinks like 1/L",
        statement="the critical step 2/S_min shrinks like 1/L (a property of the formula S_min = 2La, ‖w*‖ = 1)",
        source=f"{SOURCE}, result 5",
        measured=slope, relation="<=", bound=-0.99, kind="identity",
        basis="log–log slope of 2/S_min vs L (exactly −1 for ‖w*‖ = 1, since S_min = 2La); a check of the "
              "reference, not of training",
        no_data_reason="fewer than two depths",
    ))
    return out


THRESHOLDS = {
    "critical step": Threshold("2/S_min = 1/(aL)", "paper: result 5 and Fig. 2 (‖w*‖ = 1)"),
    "success_tol": Threshold(1e-8, "ours: ‖w_e − w*‖² ≤ 1e-8 (‖w*‖ = 1) after the given steps"),
    "no success above 2/S_min": Threshold(0.0, "exact: a fraction that must be zero"),
    "success below (2/S_min)/2": Threshold(SUCCESS_MAJORITY, "ours: 'succeeds' read as a majority of runs; "
                                                             "below half the critical step to keep away from it"),
    "1/L slope": Threshold(-0.99, "exact: −1, with 0.01 for rounding"),
}


def plot(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=2, nrows=1, width=3.8)
    for L, g in table.groupby("depth"):
        med = g.groupby("lr").distance.median()
        line = axes[0, 0].loglog(med.index, med.clip(lower=1e-32), "o-", ms=3, label=f"L = {L}")[0]
        axes[0, 0].axvline(float(g.critical_step.iloc[0]), color=line.get_color(), ls=":", lw=1)
        succ = g.groupby("lr").success.mean()
        axes[0, 1].semilogx(succ.index, succ, "o-", ms=3, color=line.get_color(), label=f"L = {L}")
        axes[0, 1].axvline(float(g.critical_step.iloc[0]), color=line.get_color(), ls=":", lw=1)
    axes[0, 0].set(xlabel="η", ylabel="final ‖w_e − w*‖² (median)", title="Fig. 2: distance vs η (dotted: 2/S_min)")
    axes[0, 1].set(xlabel="η", ylabel="fraction succeeded", title="success vs η", ylim=(-0.05, 1.05))
    axes[0, 0].legend()
    return fig


EXPERIMENT = Experiment(
    name="mc2024-fig2",
    title="Residual nets of depth 5–40: training succeeds only below the critical step 2/S_min (Fig. 2)",
    paper=SOURCE, config_type=Fig2Config, presets=PRESETS, run=run, plot=plot, claims=claims,
    description=__doc__ or "", thresholds=THRESHOLDS,
)
