"""``mc2024-resnet``: residual deep linear networks, distance and sharpness vs init scale (res-1).

Marion & Chizat 2024 (``marion-chizat-2024.md``): W_k = I + (s/√(Ld)) N_k, k = 1…L, and a fixed
random unit output vector; result 4: gradient flow converges from this initialisation, and result 2
(ii): to a minimizer whose sharpness is at most a constant (depending on κ) times S_min.

res-1: L = 10, the data of Fig. 1, scales linspace(0, 1.7, 10), 4k steps, 20 repetitions per η;
panels as Fig. 1(a, b).
"""

from __future__ import annotations

import pandas as pd
import torch

from ..claims import Claim, Control, Threshold
from ..experiment import Experiment
from .common import SOURCE, GridConfig, grid_figure, grid_thresholds, run_grid, sharpness_claims

_RES = dict(kind="residual", depth=10, n=50, d=5, lrs=(0.005, 0.02, 0.07, 0.1, 0.2), steps=(4_000,) * 5,
            scale_min=0.0, scale_max=1.7, num_scales=10)
PRESETS = {
    "tiny": GridConfig(**{**_RES, "lrs": (0.02, 0.2), "steps": (300, 300), "num_scales": 3}, repetitions=(1, 1)),
    "quick": GridConfig(**_RES, repetitions=(3,) * 5),
    "full": GridConfig(**_RES, repetitions=(20,) * 5),
}

def run(cfg: GridConfig, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    """The grid on residual nets (:func:`.common.run_grid`): one row per run."""
    return run_grid(cfg, device=device, progress=progress)


def claims(table: pd.DataFrame) -> list[Claim]:
    """The grid's claims (:func:`.common.sharpness_claims`, without the 1.5× constant, which is the small
    plain init's) and result 4 at the smallest η (control: the largest η, above 2/S_min)."""
    init_ratio = float((table.sharpness_init / table.s_min).min())
    reason = ("the residual initialisation (near the identity) is itself sharper than S_min (min S_init/S_min = "
              f"{init_ratio:.3g} here), so these runs hold no flatter non-minimizer to contrast with; the plain "
              "grid (mc2024-fig1) carries this claim's control")
    out = [c for c in sharpness_claims(table, "residual L=10", floor_control_reason=reason) if "1.5×" not in c.name]
    small, large = table[table.lr == table.lr.min()], table[table.lr == table.lr.max()]
    crit = float(table.critical_step.iloc[0])
    out.append(Claim(
        name="residual init: GD with the smallest η converges",
        statement="gradient flow converges from the Gaussian residual initialisation",
        source=f"{SOURCE}, result 4",
        measured=float(small.converged.mean()), relation=">=", bound=1.0,
        basis=f"fraction of the {len(small)} runs at η = {table.lr.min():g} (closest to gradient flow) with "
              f"‖w_e − w*‖² ≤ converged_tol after {int(small.steps.iloc[0])} steps, over scales "
              f"{table.scale.min():g}…{table.scale.max():g}",
        control=Control(setting=f"the {len(large)} runs at the largest η = {table.lr.max():g}"
                                f"{' > 2/S_min' if table.lr.max() > crit else ''} (far from gradient flow)",
                        measured=float(large.converged.mean()),
                        note="GD with a large step is not gradient flow: there it should not converge"),
        seeds=len(small), rule=f"every one of the {len(small)} runs",
    ))
    return out


THRESHOLDS = {
    **{k: v for k, v in grid_thresholds().items() if k != "small-init constant"},
    "all runs converge at the smallest η": Threshold(1.0, "exact: a fraction that must be one"),
}


def plot(table: pd.DataFrame):
    return grid_figure(table, "residual: ")


EXPERIMENT = Experiment(
    name="mc2024-resnet",
    title="Residual deep linear nets: distance and sharpness vs init scale (res-1)",
    paper=SOURCE, config_type=GridConfig, presets=PRESETS, run=run, plot=plot, claims=claims,
    description=__doc__ or "", thresholds=THRESHOLDS,
)
