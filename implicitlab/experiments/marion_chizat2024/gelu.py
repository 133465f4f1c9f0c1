"""``mc2024-gelu``: GELU between the layers of the plain L = 10 net, noiseless data; as Fig. 1(a, b).

Marion & Chizat 2024 (``marion-chizat-2024.md``, GELU experiment): n = 50, d = 5, σ = 0;
η ∈ {0.005, 0.02, 0.07} with {160k, 40k, 16k} steps, 20 repetitions, scales linspace(0.428, 0.7, 8);
panels as Fig. 1(a, b). The theory is for linear nets; the claim is that GELU behaves qualitatively
the same. The distance to w* is that of the predictions on the training inputs to X w*.

Edge of stability and rounding (issue 18). At η = 0.07 most fitted runs end in the band S·η/2 ≈ 1
(S_min = 21.6 and 2/η = 28.6 leave a narrow window): GD there does not sit at a minimizer but, in the
paper's words, "hovers near 2/η" (result 5), and where in its oscillation a run is at the last step is
chaotic — a 1e-15 relative change of the initial weights (or of the kernels' rounding) changed the max
of S·η/2 over the fitted runs from 1.045 to 1.409 and the trend's p from 0.007 to 0.087, flipping both
verdicts. Rounding deciding a verdict is not evidence, so the two claims read only what the paper
states about where GD settles, not single runs' phases:

- "fitted runs have S ≤ 2/η": the *median* S·η/2 over the fitted runs (a typical run settles, i.e.
  hovers, at the edge of stability at most), not the max (the max is reported in the basis).
- "sharpness grows with init scale" (Fig. 1b: the sharpness after training rises with the scale up to
  the 2/η line, where it stays): the Spearman test on the sharpness with the band S·η/2 ≥ 1/1.1 (the
  claim above's 10% band, mirrored) collapsed into one tie at its lower edge, so the order of runs
  inside the band — the chaotic part — cannot move the p-value.

Both rules were fixed before the perturbation check. On the quick preset, 13 runs — the written-out
engine unperturbed and with 1e-15 relative perturbations of the initial weights from nine generator
seeds, and the autograd engine unperturbed and with two of those seeds — gave medians 0.992–0.9999
(bound 1.1; the max: 1.045–1.056) and the trend's p 0.058–0.151: the same verdicts every time
(holds; refuted). The former uncapped test ranged over 0.013–0.087 on the same 13 runs, holding on
12 and refuted on one (autograd, seed 1). The trend's margin is thin (0.058 against 0.05): a verdict
that one more run settling below the band would change.
"""


from __future__ import annotations

import pandas as pd
import torch

from ..claims import Claim, Control, Threshold
from ..experiment import Experiment
from .common import SHUFFLE_SEED, SOURCE, TREND_ALPHA, GridConfig, grid_figure, run_grid, trend_claim

_GELU = dict(depth=10, n=50, d=5, noise=0.0, activation="gelu", scale_min=0.428, scale_max=0.7, num_scales=8)
PRESETS = {
    "tiny": GridConfig(**{**_GELU, "num_scales": 3}, lrs=(0.07,), steps=(800,), repetitions=(1,)),
    "quick": GridConfig(**{**_GELU, "num_scales": 6}, lrs=(0.07,), steps=(16_000,), repetitions=(3,)),
    "full": GridConfig(**_GELU, lrs=(0.005, 0.02, 0.07), steps=(160_000, 40_000, 16_000), repetitions=(20, 20, 20)),
}

FITTED_TRAIN_LOSS = 1e-3
"""A run has fitted the data below this train loss (‖w*‖ = 1, noiseless: 0 at w*). Ours, set after seeing
the numbers: GELU nets fit slowly (train loss ~1e-4 after the authors' step counts)."""
ROBUSTNESS_NOTE = "inside the band the last step's sharpness is the phase of a chaotic oscillation: a 1e-15 relative change of the initial weights moved the max from 1.045 to 1.409"
"""Why the claims do not read the last step's sharpness of single runs at the edge of stability."""
EOS_TOLERANCE = 1.1
"""The 2/η ceiling for fitted GELU runs gets the 10% edge-of-stability band of Fig. 1(d). Ours, set after
seeing the numbers: fitted GELU runs sit at the edge of stability rather than at an exact minimizer."""


def run(cfg: GridConfig, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    """The grid with GELU between the layers (:func:`.common.run_grid`): one row per run."""
    return run_grid(cfg, device=device, progress=progress)


def claims(table: pd.DataFrame) -> list[Claim]:
    fitted = table[~table.diverged & (table.train_loss <= FITTED_TRAIN_LOSS) & table.sharpness_converged]
    init_ok = fitted[fitted.sharpness_init_converged]
    no_fit = f"no run (of {len(table)}) fitted the data below train loss {FITTED_TRAIN_LOSS:g} with a certified sharpness"
    ratio = fitted.sharpness * fitted.lr / 2  # S·η/2 of each fitted run at its last step
    ratio_init = init_ok.sharpness_init * init_ok.lr / 2
    out = [Claim(
        name="GELU: fitted runs have S ≤ 2/η",
        statement="as for linear nets, GD only settles where S ≤ 2/η: a typical fitted run sits at the edge of "
                  "stability at most",
        source=f"{SOURCE}, GELU experiment and result 5",
        measured=float(ratio.median()) if len(fitted) else float("nan"),
        relation="<=", bound=EOS_TOLERANCE,
        basis=f"median S·η/2 over the {len(fitted)} runs with train loss ≤ {FITTED_TRAIN_LOSS:g} (max "
              f"{float(ratio.max()) if len(fitted) else float('nan'):.3g}, {int((ratio > EOS_TOLERANCE).sum())} "
              f"above {EOS_TOLERANCE:g}; the max is not the statistic: {ROBUSTNESS_NOTE}); the tolerance "
              f"{EOS_TOLERANCE:g} and the fitted level are ours, set after seeing the numbers (threshold table)",
        control_reason=(f"no run of this grid is a setting where GD should settle above 2/η — that is the claim; the "
                        f"sharpness at initialisation, the former control, is far below 2/η here (median S·η/2 "
                        f"{float(ratio_init.median()) if len(init_ok) else float('nan'):.2g} over {len(init_ok)} runs, "
                        f"{int((ratio_init > EOS_TOLERANCE).sum())} above {EOS_TOLERANCE:g}), so it would show nothing; "
                        f"a median above {EOS_TOLERANCE:g} refutes the claim"),
        seeds=len(fitted), rule=f"median over all {len(fitted)} fitted runs (fixed before the perturbation check)",
        no_data_reason=no_fit,
    )]
    ceiling = 2 / (fitted.lr * EOS_TOLERANCE)  # the lower edge of the edge-of-stability band, per run
    out.append(trend_claim(
        "GELU: sharpness grows with init scale",
        "GELU networks behave qualitatively like linear ones: larger init scale, sharper minimizer, up to the "
        "2/η ceiling where GD hovers at the edge of stability (as Fig. 1b)",
        f"{SOURCE}, GELU experiment (as Fig. 1b)", fitted.scale, fitted.sharpness.clip(upper=ceiling),
        increasing=True,
        what=f"init scale, final sharpness of the fitted runs with the edge-of-stability band S·η/2 ≥ "
             f"1/{EOS_TOLERANCE:g} counted as one tie at its edge ({ROBUSTNESS_NOTE})"))
    kappa = float(table.kappa.iloc[0])
    smallest_scale = float(table.scale.min())
    n_small = int((table.scale == smallest_scale).sum())
    small = fitted[fitted.scale == smallest_scale]
    larger = fitted[fitted.scale > smallest_scale]
    large_scale = float(larger.scale.max()) if len(larger) else float("nan")
    large = larger[larger.scale == large_scale]
    out.append(Claim(
        name="GELU: small init finds a flat minimizer",
        statement="from small scale the minimizer is nearly as flat as the linear bound S_min",
        source=f"{SOURCE}, GELU experiment (qualitative analogue of result 2)",
        measured=float((small.sharpness / small.s_min).max()) if len(small) else float("nan"),
        relation="<=", bound=4 * kappa,
        basis=f"max S/S_min(linear) over the {len(small)} of {n_small} runs at the smallest scale "
              f"({smallest_scale:.3g}) that fitted, vs the 4κ line of the linear theory (κ = {kappa:.3g}) — a "
              "comparison, not a theorem for GELU",
        control=Control(setting=f"the largest init scale with a fitted run ({large_scale:.3g}; {len(large)} runs)",
                        measured=float((large.sharpness / large.s_min).max()) if len(large) else float("nan"),
                        note="large vs small init: the paper's contrast"),
        seeds=len(small), rule=f"maximum over the {len(small)} fitted runs",
        no_data_reason=f"none of the {n_small} runs at the smallest scale ({smallest_scale:.3g}) fitted the data "
                       f"below train loss {FITTED_TRAIN_LOSS:g} with a certified sharpness",
    ))
    return out


THRESHOLDS = {
    "fitted train loss": Threshold(FITTED_TRAIN_LOSS, "ours, set after seeing the numbers: GELU nets reach train "
                                                      "loss ~1e-4 after the authors' step counts"),
    "2/η tolerance": Threshold(EOS_TOLERANCE, "ours, set after seeing the numbers: the 10% edge-of-stability band "
                                              "of mc2024-fig1, since fitted GELU runs are not at an exact minimizer"),
    "4κ line": Threshold("4κ·S_min of the linear theory", "paper: the 8LΛ line (a comparison for GELU, not a "
                                                           "theorem)"),
    "trend test level": Threshold(TREND_ALPHA, "ours: the conventional 5% level, one-sided"),
    "shuffle seed": Threshold(SHUFFLE_SEED, "ours: the seed of the one re-pairing the control tests"),
}


def plot(table: pd.DataFrame):
    return grid_figure(table, "GELU: ")


EXPERIMENT = Experiment(
    name="mc2024-gelu",
    title="GELU between layers (L = 10, noiseless): as Fig. 1(a, b)",
    paper=SOURCE, config_type=GridConfig, presets=PRESETS, run=run, plot=plot, claims=claims,
    description=__doc__ or "", thresholds=THRESHOLDS,
)
