"""``mc2024-fig1``: plain deep linear nets, sharpness vs init scale; edge of stability.

Marion & Chizat 2024, Fig. 1 (authors' grid, ``marion-chizat-2024.md``): L = 10, n = 50, d = 5;
η ∈ {0.005, 0.02, 0.07, 0.1, 0.2} with {40k, 10k, 4k, 4k, 2k} steps and {20, 20, 20, 20, 80}
repetitions; init scales linspace(0.25, 0.6, 10).

- (a) squared distance ‖w_e − w*‖² of the end-to-end vector after training, vs init scale;
- (b) sharpness at init and after training vs scale, per η, with the lines 2/η, S_min and 8LΛ;
- (c, d) distance and sharpness along training at η ∈ {0.02, 0.1}, scale 0.35, 450 steps,
  sharpness every 5 steps (certified by residual): at η = 0.1 > 2/S_min the run cannot settle and
  sharpness hovers at 2/η (edge of stability).

Sharpness is computed at initialisation and at the true final step of every run (the authors keep
only their last every-5-steps estimate). ``mc2024-fig3`` is a view of these runs (the grid rows of
this table), so it trains nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ...config import dtype_of
from ...diagnostics.ensemble_curvature import MidpointSharpnessProbe
from ...models import Ensemble
from ...seeds import derive_seed
from ...train import ProbeContext, every, gradient_descent
from ..claims import Claim
from ..experiment import Experiment
from .common import FIG1_PRESETS, SOURCE, Fig1Config, grid_rows, plot_grid_panels, run_grid, sharpness_claims

PRESETS = FIG1_PRESETS


def _distance_probe(w_star: torch.Tensor):
    def probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
        return {"distance": ((ctx.model.end_to_end()[:, 0, :] - w_star) ** 2).sum(-1)}

    return probe


def run_trace(cfg: Fig1Config, device: torch.device) -> pd.DataFrame:
    """Fig. 1(c, d): every trace step size × repetition as one ensemble with per-run step sizes."""
    dtype = dtype_of(cfg.dtype)
    P = cfg.problem(device)
    lrs = [lr for lr in cfg.trace_lrs for _ in range(cfg.trace_reps)]
    reps = [r for _ in cfg.trace_lrs for r in range(cfg.trace_reps)]
    seeds = [derive_seed(cfg.seed, "trace_init", i) for i in range(len(lrs))]
    ens = Ensemble.create(cfg.architecture, [cfg.trace_scale] * len(lrs), seeds, dtype=dtype, device=device)
    probe = MidpointSharpnessProbe(tol=cfg.sharpness_tol, criterion="residual")
    res = gradient_descent(ens, "square", P.X, P.y, lr=torch.tensor(lrs, dtype=dtype, device=device),
                           num_steps=cfg.trace_steps, probe_steps=every(cfg.trace_every, cfg.trace_steps),
                           probes=(probe, _distance_probe(P.w_star)))
    t = res.table
    t.insert(0, "part", "trace")
    t["lr"] = np.asarray(lrs)[t.run.to_numpy()]
    t["rep"] = np.asarray(reps)[t.run.to_numpy()]
    t["scale"] = cfg.trace_scale
    t["s_min"] = P.s_min
    return t.drop(columns=["run"])


def run(cfg: Fig1Config, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    """The grid's rows (``part = "grid"``, one per run) and the traces' (``part = "trace"``, one per run and probe step)."""
    grid = run_grid(cfg, device=device, progress=progress, share=0.9)
    trace = run_trace(cfg, device)
    if progress:
        progress(1.0)
    return pd.concat([grid, trace], ignore_index=True)


def claims(table: pd.DataFrame) -> list[Claim]:
    out = sharpness_claims(grid_rows(table), "plain L=10")
    trace = table[table.part == "trace"]
    eos_lr = max(trace.lr.unique()) if len(trace) else None
    if eos_lr is not None:
        g = trace[(trace.lr == eos_lr) & ~trace.diverged.astype(bool)]
        late = g[g.step >= g.step.max() * 2 / 3]
        ratio = float(late.sharpness_mid.median() * eos_lr / 2) if len(late) else float("nan")
        swing = (float(late.sharpness.min() * eos_lr / 2), float(late.sharpness.max() * eos_lr / 2)) if len(late) \
            else (float("nan"), float("nan"))
        rose = float((g[g.step == 0].sharpness * eos_lr / 2).max()) if len(g) else float("nan")
        out.append(Claim(
            name=f"η={eos_lr}: sharpness hovers at 2/η",
            statement="sharpness rises to and hovers at 2/η (edge of stability)",
            source=f"{SOURCE}, Fig. 1(d) and result 5",
            measured=abs(ratio - 1), relation="<=", bound=0.1,
            basis=f"|median S_mid·η/2 − 1| over the last third of {int(g.step.max())} steps, S_mid the certified "
                  f"sharpness at the centre θ − (η/2)∇L of the GD two-cycle; median S_mid·η/2 = {ratio:.4f} "
                  f"(at the iterates S·η/2 swings over [{swing[0]:.2f}, {swing[1]:.2f}]; at init ≤ {rose:.2f}); "
                  f"10% (ours)",
        ))
    return out


def plot(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=4, nrows=1, width=3.4)
    plot_grid_panels(axes[0, 0], axes[0, 1], grid_rows(table))
    trace = table[table.part == "trace"]
    for (lr, rep), g in trace.groupby(["lr", "rep"]):
        colour = "C0" if lr == min(trace.lr) else "C3"
        label = f"η = {lr:g}" if rep == 0 else None
        axes[0, 2].semilogy(g.step, g.distance, color=colour, lw=0.9, label=label)
        axes[0, 3].plot(g.step, g.sharpness, color=colour, lw=0.5, alpha=0.5)
        axes[0, 3].plot(g.step, g.sharpness_mid, color=colour, lw=1.2, label=label)
    for lr in trace.lr.unique():
        axes[0, 3].axhline(2 / lr, color="C0" if lr == min(trace.lr) else "C3", ls=":", lw=0.8)
    if len(trace):
        axes[0, 3].axhline(float(trace.s_min.iloc[0]), color="k", lw=1.0, label="S_min")
    axes[0, 2].set(xlabel="step", ylabel="‖w_e − w*‖²", title="(c) distance along training")
    axes[0, 3].set(xlabel="step", ylabel="sharpness", title="(d) sharpness (thick: step midpoint)")
    axes[0, 2].legend()
    axes[0, 3].legend()
    return fig


EXPERIMENT = Experiment(
    name="mc2024-fig1",
    title="Plain deep linear nets: distance and sharpness vs init scale; edge of stability (Fig. 1)",
    paper=SOURCE, config_type=Fig1Config, presets=PRESETS, run=run, plot=plot, claims=claims,
    description=__doc__ or "",
)
