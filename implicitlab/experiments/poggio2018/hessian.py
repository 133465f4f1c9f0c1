"""``poggio2018-hessian``: Hessian spectra at (asymptotic) minima — Thm 4 and Sec. 12.3.

Poggio et al. 2018:

- Thm 4 (Takeuchi): for an overparametrized network with the square loss, the Hessian at a zero-
  loss point has a zero eigenvalue. More precisely (Sec. 12.3): at a zero minimum the residuals
  E_n vanish, so H = (2/N) Σ_n J_nᵀJ_n (mean loss, no ½) has rank ≤ N·d' — at least D − N·d' zero
  eigenvalues, at most N·d' nonzero ones, none negative.
- Sec. 12.3.2, case 1: a one-layer network f(wᵀx) with an exponential-type loss has a Hessian
  Σ_n e^{−y_n f}(f'² − y_n f'') x_n x_nᵀ — at most N distinct nonzero eigenvalues (rank ≤ N).
- Sec. 12.3.2, case 2 and Eq. 46: deep networks (deep linear, ReLU) with the exponential loss have
  cross-layer second-derivative terms; "simple numerical checks show that this bound is generically
  broken": more than N distinct eigenvalues.

Every spectrum is that of the explicit float64 Hessian (``torch.func.hessian``) of the mean loss,
from :func:`implicitlab.diagnostics.spectrum.hessian_spectrum` (with its fallback driver for
these highly degenerate matrices), counted with
:func:`implicitlab.diagnostics.spectrum.spectrum_counts` at a tolerance relative to the largest
|λ|. Square-loss models are trained by GD until the loss is ≤ ``square_loss_target`` (a float64
zero); exponential-loss models are evaluated after ``exp_steps`` GD steps, where the
minimum (at infinity) is approached, from ``exp_seeds`` initialisations each.

What kind of evidence each claim is. The square-loss counts are a rank identity: at a zero of the
loss H = (2/N)Σ_n J_nᵀJ_n exactly, so rank ≤ N·d' < D and H ≽ 0 — consistency checks of the
Hessian and the counting, valid only *at* a zero: a model whose loss did not reach
``square_loss_target`` gets "no data" with the loss it reached. The one-layer exp-loss bound is
the same kind of identity (a sum of N rank-one terms x_nx_nᵀ). The deep nets' "> N distinct
eigenvalues" is the paper's numerical prediction ("generically broken"): it could fail, holds only
if it holds at every init, and its control is the paper's own contrast, the one-layer nets of case
1, measured the same way on the same N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...config import require, require_positive
from ...diagnostics.spectrum import explicit_hessian, hessian_spectrum, spectrum_counts
from ...losses import loss as loss_fn
from ...models import Architecture, Ensemble
from ...seeds import derive_seed
from ...train import gradient_descent
from ..claims import Claim, Control, Threshold
from ..experiment import Experiment

SOURCE = "Poggio et al. 2018"


@dataclass(frozen=True)
class HessianConfig:
    n: int = 8  # N training examples
    d: int = 4  # input dimension of the square-loss and deep nets
    d_wide: int = 12  # input dimension of the one-layer nets (d > N, so a null space exists)
    width: int = 12
    depth: int = 3
    square_loss_target: float = 1e-26  # GD until the mean square loss is this small (a float64 zero)
    square_max_steps: int = 200_000
    square_lr: float = 0.05
    exp_steps: int = 2_000
    exp_lr: float = 0.1
    exp_seeds: int = 3  # initialisations of each exp-loss net ("generically": every init must show it)
    rtol: float = 1e-8  # zero / distinct eigenvalues, relative to max |λ|
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "d", "d_wide", "width", "depth", "square_max_steps", "exp_steps", "exp_seeds"):
            require(getattr(self, name) >= 1, f"{name} must be ≥ 1")
        require(self.d_wide > self.n, "d_wide must exceed n (the one-layer nets then have a null space)")
        for name in ("square_loss_target", "square_lr", "exp_lr", "rtol"):
            require_positive(name, getattr(self, name))


PRESETS = {
    "tiny": HessianConfig(n=5, width=6, d_wide=7, square_max_steps=5_000, exp_steps=200),
    "quick": HessianConfig(),
    "full": HessianConfig(n=16, width=24, d_wide=24, square_max_steps=1_000_000, exp_steps=10_000),
}


class OneLayer(nn.Module):
    """f(x) = σ(wᵀx) with the smooth ReLU σ(z) = z/(1 + e^{−z/ε²}) of Sec. 12.3.2 (ε = 0.5)."""

    def __init__(self, d: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(0.3 * torch.randn(1, d, generator=gen, dtype=torch.float64))

    def forward(self, X):
        z = X @ self.w.T
        return z * torch.sigmoid(z / 0.25)


def _train_to_zero(arch: Architecture, X, y, cfg: HessianConfig, seed: int):
    ens = Ensemble.create(arch, [1.0], [seed])
    done = 0
    while done < cfg.square_max_steps:
        chunk = min(5_000, cfg.square_max_steps - done)
        gradient_descent(ens, "square", X, y, lr=cfg.square_lr, num_steps=chunk)
        done += chunk
        with torch.no_grad():
            if float(loss_fn("square", ens(X), y)[0]) <= cfg.square_loss_target:
                break
    return ens.member(0), done


def _row(case: str, loss_name: str, model: nn.Module, X, y, cfg: HessianConfig, n_out: int, steps: int,
         seed: int = 0) -> dict:
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise RuntimeError(f"{case}: training diverged (non-finite weights); lower the step size")
    H = explicit_hessian(model, loss_name, X, y)  # mean loss; "square" sums over outputs, no ½
    lam = hessian_spectrum(H)  # eigvalsh, or LAPACK's syev where it fails on these degenerate spectra
    c = spectrum_counts(lam, rtol=cfg.rtol)
    with torch.no_grad():
        value = float(loss_fn(loss_name, model(X), y))
    return {
        "case": case, "loss_name": loss_name, "seed": seed, "N": X.shape[0], "d_out": n_out, "D": int(lam.numel()),
        "steps": steps, "final_loss": value, "loss_target": cfg.square_loss_target if loss_name == "square" else np.nan, "zero": c.zero, "negative": c.negative, "positive": c.positive,
        "distinct_nonzero": c.distinct_nonzero, "lambda_max": c.scale, "rtol": cfg.rtol,
        "eigenvalues": " ".join(f"{v:.6e}" for v in lam.tolist()),
    }


def run(cfg: HessianConfig, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    # explicit Hessians are small dense float64 matrices: computed on the CPU whatever the device
    gen = torch.Generator().manual_seed(cfg.seed)
    X = torch.randn(cfg.n, cfg.d, generator=gen, dtype=torch.float64)
    rows = []
    for i, d_out in enumerate((1, 2)):  # Thm 4: overparametrized ReLU MLPs at a zero of the square loss
        Y = torch.randn(cfg.n, d_out, generator=gen, dtype=torch.float64)
        arch = Architecture("mlp", d_in=cfg.d, depth=cfg.depth, width=cfg.width, d_out=d_out, activation="relu")
        model, steps = _train_to_zero(arch, X, Y if d_out > 1 else Y[:, 0], cfg, derive_seed(cfg.seed, "init_square", i))
        rows.append(_row(f"square ReLU MLP, d'={d_out}", "square", model, X, Y if d_out > 1 else Y[:, 0], cfg,
                         d_out, steps))
        if progress:
            progress(0.15 * (i + 1))

    # exponential loss on separable labels, exp_seeds inits of each net (trained side by side)
    Xw = torch.randn(cfg.n, cfg.d_wide, generator=gen, dtype=torch.float64)
    yw = torch.sign(Xw @ torch.randn(cfg.d_wide, generator=gen, dtype=torch.float64))
    y = torch.sign(X @ torch.randn(cfg.d, generator=gen, dtype=torch.float64))
    seeds = range(cfg.exp_seeds)
    lin1 = Ensemble.create(Architecture("deep_linear", d_in=cfg.d_wide, depth=1), [0.3] * cfg.exp_seeds,
                           [derive_seed(cfg.seed, "init_exp_linear", s) for s in seeds])
    gradient_descent(lin1, "exp", Xw, yw, lr=cfg.exp_lr, num_steps=cfg.exp_steps)
    rows += [_row("exp one layer, linear", "exp", lin1.member(s), Xw, yw, cfg, 1, cfg.exp_steps, s) for s in seeds]
    for s in seeds:
        smooth = OneLayer(cfg.d_wide, derive_seed(cfg.seed, "init_exp_smooth", s))
        opt = torch.optim.SGD(smooth.parameters(), lr=cfg.exp_lr)
        for _ in range(cfg.exp_steps):
            opt.zero_grad()
            loss_fn("exp", smooth(Xw), yw).backward()
            opt.step()
        rows.append(_row("exp one layer, smooth ReLU", "exp", smooth, Xw, yw, cfg, 1, cfg.exp_steps, s))
    if progress:
        progress(0.6)

    for j, arch in enumerate((
        Architecture("deep_linear", d_in=cfg.d, depth=2, width=cfg.width),
        Architecture("mlp", d_in=cfg.d, depth=cfg.depth, width=cfg.width, activation="relu"),
    )):
        scale = 0.3 if arch.kind == "deep_linear" else 1.0  # deep-linear entries are N(0, s²), no fan-in
        ens = Ensemble.create(arch, [scale] * cfg.exp_seeds, [derive_seed(cfg.seed, "init_exp_deep", j, s) for s in seeds])
        gradient_descent(ens, "exp", X, y, lr=cfg.exp_lr, num_steps=cfg.exp_steps)
        name = "exp two-layer linear (Eq. 46)" if arch.kind == "deep_linear" else f"exp ReLU MLP, L={cfg.depth}"
        rows += [_row(name, "exp", ens.member(s), X, y, cfg, 1, cfg.exp_steps, s) for s in seeds]
    if progress:
        progress(1.0)
    return pd.DataFrame(rows)


# the one-layer net (case 1) each deep net is contrasted with: the same rule on the same N
CONTROL_OF = {"exp two-layer linear (Eq. 46)": "exp one layer, linear"}


def _control_case(case: str) -> str:
    return CONTROL_OF.get(case, "exp one layer, smooth ReLU")


def _at_zero(r) -> tuple[bool, str]:
    """Whether the square-loss model reached a zero of the loss (the precondition of Thm 4), and why not."""
    target = float(r.loss_target) if "loss_target" in r and np.isfinite(r.loss_target) else THRESHOLDS["zero_loss"].value
    if np.isfinite(r.final_loss) and r.final_loss <= target:
        return True, ""
    return False, (f"not a zero of the loss: GD reached mean square loss {r.final_loss:.2e} after {int(r.steps)} steps, "
                   f"above the target {target:.0e}; Thm 4 is a statement about Hessians at a zero")


def claims(table: pd.DataFrame) -> list[Claim]:
    out = []
    if "seed" not in table:
        table = table.assign(seed=0)
    for _, r in table[table.loss_name == "square"].iterrows():
        tag = r.case
        ok, why = _at_zero(r)
        nan = float("nan")
        pre = f"loss {r.final_loss:.1e} ≤ {THRESHOLDS['zero_loss'].value:.0e} checked first (else no data)"
        out.append(Claim(
            name=f"{tag}: a zero eigenvalue (Thm 4)",
            statement="at a zero of the square loss an overparametrized network's Hessian has a zero eigenvalue",
            source=f"{SOURCE}, Thm 4 (Takeuchi)", kind="identity",
            measured=float(r.zero) if ok else nan, relation=">=", bound=1.0, no_data_reason=why,
            basis=f"eigenvalues with |λ| ≤ {r.rtol:g}·max|λ| of the explicit float64 Hessian; {pre}; "
                  f"identity: rank ≤ N·d' = {r.N * r.d_out} < D = {r.D} at a zero",
        ))
        out.append(Claim(
            name=f"{tag}: at most N·d' nonzero eigenvalues",
            statement="H = Σ_n J_nᵀJ_n at a zero minimum: rank ≤ N·d', so ≥ D − N·d' zero eigenvalues",
            source=f"{SOURCE}, Sec. 12.3 (square loss) and Thm 4", kind="identity",
            measured=float(r.positive + r.negative) if ok else nan, relation="<=", bound=float(r.N * r.d_out),
            no_data_reason=why,
            basis=f"nonzero eigenvalues of the {r.D}×{r.D} Hessian, N = {r.N}, d' = {r.d_out}; {pre}",
        ))
        out.append(Claim(
            name=f"{tag}: positive semidefinite at the minimum",
            statement="at a zero of the square loss the Hessian Σ_n J_nᵀJ_n is positive semidefinite",
            source=f"{SOURCE}, Sec. 12.3", kind="identity",
            measured=float(r.negative) if ok else nan, relation="<=", bound=0.0, no_data_reason=why,
            basis=f"eigenvalues below −{r.rtol:g}·max|λ|; {pre}",
        ))
    exp = table[table.loss_name == "exp"]
    for case, g in exp[exp.case.str.startswith("exp one layer")].groupby("case", sort=False):
        r = g.iloc[0]
        out.append(Claim(
            name=f"{case}: ≤ N distinct eigenvalues",
            statement="one layer with an exponential-type loss: at most N distinct nonzero Hessian eigenvalues",
            source=f"{SOURCE}, Sec. 12.3.2 case 1 (Eq. 44)", kind="identity",
            measured=float(g.distinct_nonzero.max()), relation="<=", bound=float(r.N), seeds=len(g),
            rule=f"max over {len(g)} inits",
            basis=f"distinct nonzero eigenvalues (clusters at {r.rtol:g}·max|λ|) of the {r.D}×{r.D} Hessian after "
                  f"{r.steps} GD steps, the largest over the inits; identity: H = Σ_n c_n x_nx_nᵀ has rank ≤ N",
        ))
    for case, g in exp[~exp.case.str.startswith("exp one layer")].groupby("case", sort=False):
        r = g.iloc[0]
        ctrl_case = _control_case(case)
        ctrl = exp[exp.case == ctrl_case]
        out.append(Claim(
            name=f"{case}: > N distinct eigenvalues",
            statement="deep networks with an exponential loss: the N-distinct-eigenvalue bound is generically broken",
            source=f"{SOURCE}, Sec. 12.3.2 case 2 and Eq. 46",
            measured=float(g.distinct_nonzero.min()), relation=">", bound=float(r.N), seeds=len(g),
            rule=f"holds on every one of {len(g)} inits (the fewest distinct eigenvalues over the inits)",
            control=Control(
                setting=f"{ctrl_case} (Sec. 12.3.2 case 1), same N = {r.N}",
                measured=float(ctrl.distinct_nonzero.min()) if len(ctrl) else float("nan"),
                note="one layer: H = Σ_n c_n x_nx_nᵀ, so at most N distinct nonzero eigenvalues"),
            basis=f"distinct nonzero eigenvalues (clusters at {r.rtol:g}·max|λ|) of the {r.D}×{r.D} Hessian after "
                  f"{r.steps} GD steps, the fewest over {len(g)} inits",
        ))
    return out


THRESHOLDS = {
    "zero_loss": Threshold(1e-26, "ours: the precondition 'a zero of the loss' read as mean square loss ≤ 1e-26, "
                                  "a float64 zero (the residual term of H is then ~1e-13·‖J‖², far below rtol)"),
    "rtol": Threshold(1e-8, "ours: zero / distinct eigenvalues relative to max|λ|; explicit float64 Hessians put "
                            "their zero eigenvalues near 1e-15·max|λ|"),
    "nonzero_bound": Threshold("N·d'", "exact: rank of Σ_n J_nᵀJ_n (Sec. 12.3)"),
    "distinct_bound": Threshold("N", "paper: Sec. 12.3.2 case 1 (Eq. 44); broken in case 2 (Eq. 46)"),
    "inits": Threshold("every init", "ours: 'generically broken' read as: on every one of exp_seeds inits"),
}


def plot(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=2, nrows=1, width=4.2)
    first = table[table.seed == 0] if "seed" in table else table  # one init of each net
    for _, r in first.iterrows():
        lam = np.array([float(v) for v in r.eigenvalues.split()])
        mag = np.sort(np.abs(lam))[::-1] / max(np.abs(lam).max(), 1e-300)
        ax = axes[0, 0] if r.loss_name == "square" else axes[0, 1]
        ax.semilogy(np.arange(1, len(mag) + 1), np.maximum(mag, 1e-20), ".-", ms=2.5, lw=0.8,
                    label=f"{r.case} (N = {r.N})")
        ax.axhline(r.rtol, color="grey", ls=":", lw=0.8)
    axes[0, 0].set(xlabel="index", ylabel="|λ| / max|λ|", title="square loss at a zero minimum (Thm 4)")
    axes[0, 1].set(xlabel="index", ylabel="|λ| / max|λ|", title="exponential loss (Sec. 12.3.2)")
    for ax in axes[0]:
        ax.legend()
    return fig


EXPERIMENT = Experiment(
    name="poggio2018-hessian",
    title="Hessian spectra at minima: zero eigenvalues for the square loss, distinct eigenvalues for exp (Thm 4)",
    paper=SOURCE, config_type=HessianConfig, presets=PRESETS, run=run, plot=plot, claims=claims,
    description=__doc__ or "", thresholds=THRESHOLDS,
)
