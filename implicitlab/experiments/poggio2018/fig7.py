"""``poggio2018-fig7``: growth of the layer norms under GD with the exponential loss (Sec. 14).

Poggio et al. 2018, Sec. 14 and Figure 7: for one example and K layers, the product of the
layer norms ∏ρ_k grows faster than log t for K > 1, while each layer grows slower than log t.

Three things are computed and overlaid:

1. The norm-growth ODE, corrected (see :mod:`implicitlab.references.growth_ode` for the
   derivation): ρ_kρ̇_k = f̃ P e^{−f̃P}, P = ∏ρ_k, solved on a log time axis up to t = 1e100, far
   into the asymptotic regime, with the closed forms for K = 1 and K = 2 beside it.
2. Real gradient descent on a K-layer deep linear network (d × d layers, a 1 × d last layer) with
   the exponential loss on one example, started in the asymptotic regime the ODE describes (rank-
   one, aligned, balanced layers, plus a small Gaussian perturbation), time t = η·step. The ODE
   is solved from the measured initial norms and normalized output f̃ = f/∏‖W_k‖_F of each run.
3. The printed Eqs. 55–57 carry a factor K (K² in 57) that belongs to K layers tied to one scalar;
   for K = 2 the printed closed form R = li⁻¹(f̃K²t + C) runs twice as fast as the gradient flow.
   We hold it against GD and report what the numbers say.

Where the code departs from the printed equations, and why: the exponent is e^{−f̃∏ρ_i} (printed
e^{−Σρ_i f̃} in 53 and e^{−ρ_k f̃} in 55–57), the per-layer equation carries the full product
(printed: a partial product up to k), and there is no factor K in 55 (K in 56–57, not K²). Each
follows from differentiating L = e^{−f̃∏_kρ_k} with Euler's identity ⟨W_k, ∂f/∂W_k⟩ = f, which
holds exactly for linear layers, so ρ_kρ̇_k = f e^{−f} is exact along GD's flow for any W.

What kind of evidence each claim is. The K > 1 growth claims are predictions with numbers: with
u = f̃∏ρ_k and balanced layers the flow is du/dt = K f̃^{2/K} u^{a} e^{−u}, a = 2 − 2/K, so
u − log t = a·log log t + O(1) (Lyu & Li's L = Θ(1/(t (log t)^{2−2/L})), implicit-bias-results.md)
and each ρ_k ∝ u^{1/K} grows like (log t)^{1/K}. We measure the coefficient of log log t in
f̃∏ρ_k − log t, and the slope of log ρ_k vs log log t, over the last 90% of the ODE's log-time
axis, and hold them against a and 1/K within a relative tolerance (:data:`THRESHOLDS`). Their
control is the same measurement on K = 1, where the product grows like log t (coefficient 0,
slope 1). The K = 1 asymptote, the closed forms and GD-vs-ODE are identities (they follow from
the ODE and its derivation: checks of the solver and of the code); the printed Eq. 57 is the
paper's statement, refuted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ...config import dtype_of, require, require_positive
from ...models import Architecture, Ensemble
from ...references import product_norm_k1, product_norm_k2_balanced, solve_norm_growth
from ...references.growth_ode import product_norm_asymptotic
from ...train import ProbeContext, log_spaced, loss_probe, norms_probe, gradient_descent
from ..claims import Claim, Control, Threshold
from ..experiment import Experiment

SOURCE = "Poggio et al. 2018"


@dataclass(frozen=True)
class Fig7Config:
    depths: tuple[int, ...] = (1, 2, 3, 5, 10)  # K
    f_tilde: float = 1.0  # normalized output of the ODE curves (asymptotic regime)
    u0: float = 8.0  # initial f̃∏ρ_k (loss e^{−u0}): runs start fitted, in the regime Sec. 14 describes
    ode_t_max: float = 1e100  # the ODE runs to here (log time axis)
    ode_points: int = 400
    width: int = 3  # d of the deep linear nets (one example x ∈ R^d, ‖x‖ = f_tilde)
    gd_steps: int = 20_000
    gd_lr: float = 0.5  # GD time t = gd_lr · step
    init_noise: float = 1e-3  # Gaussian perturbation of the aligned start, relative to ρ0
    num_probes: int = 40
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        require(len(self.depths) > 0, "depths must not be empty")
        require(all(k >= 1 for k in self.depths), f"every depth K must be ≥ 1, got {self.depths}")
        require(1 in self.depths and 2 in self.depths, "depths must include K = 1 and K = 2 (closed forms)")
        require_positive("f_tilde", self.f_tilde)
        require_positive("u0", self.u0)
        require_positive("gd_lr", self.gd_lr)
        require(self.init_noise >= 0, f"init_noise must be ≥ 0, got {self.init_noise}")
        require(self.ode_t_max > 1e3, "ode_t_max must exceed 1e3")
        for name in ("ode_points", "width", "gd_steps", "num_probes"):
            require(getattr(self, name) >= 2, f"{name} must be ≥ 2")
        dtype_of(self.dtype)


PRESETS = {
    "tiny": Fig7Config(depths=(1, 2, 3), gd_steps=2_000, num_probes=15, ode_points=100, ode_t_max=1e50),
    "quick": Fig7Config(),
    "full": Fig7Config(depths=(1, 2, 3, 5, 10, 20), gd_steps=1_000_000, num_probes=80, ode_points=1000,
                       ode_t_max=1e300),
}


def _rho0(cfg: Fig7Config, K: int) -> float:
    """Balanced initial layer norm with f̃ρ0^K = u0."""
    return (cfg.u0 / cfg.f_tilde) ** (1.0 / K)


def _aligned_start(K: int, d: int, rho0: float, noise: float, x: torch.Tensor, gen: torch.Generator):
    """Rank-one, aligned, balanced layers W_k = ρ0 u_{k+1}u_kᵀ (u_1 = x/‖x‖, u_{K+1} = 1) + noise."""
    units = [x / x.norm()]
    for _ in range(K - 1):
        v = torch.randn(d, generator=gen, dtype=torch.float64)
        units.append(v / v.norm())
    units.append(torch.ones(1, dtype=torch.float64))
    weights = []
    for k in range(K):
        W = rho0 * torch.outer(units[k + 1], units[k])
        W = W + noise * rho0 / np.sqrt(W.numel()) * torch.randn(W.shape, generator=gen, dtype=torch.float64)
        weights.append(W.unsqueeze(0))  # (R=1, out, in)
    return weights


def _f_tilde_probe(X: torch.Tensor):
    def probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
        f = ctx.model(X)[:, 0, 0]
        prod = torch.stack([torch.linalg.matrix_norm(W) for W in ctx.model.weights], -1).prod(-1)
        return {"f_tilde": f / prod}

    return probe


def run(cfg: Fig7Config, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    dtype = dtype_of(cfg.dtype)
    frames = []
    t_ode = np.concatenate([[0.0], np.geomspace(1e-2, cfg.ode_t_max, cfg.ode_points)])
    for K in cfg.depths:  # 1. the ODE from balanced starts, far into the asymptotic regime
        sol = solve_norm_growth(np.full(K, _rho0(cfg, K)), cfg.f_tilde, t_ode)
        frames.append(pd.DataFrame({
            "source": "ode", "K": K, "t": t_ode, "product": sol.product, "layer_norm": sol.rho[:, -1],
            "log_loss": sol.log_loss, "f_tilde": cfg.f_tilde,
        }))
    frames.append(pd.DataFrame({"source": "closed_form", "K": 1, "t": t_ode,
                                "product": product_norm_k1(t_ode, cfg.f_tilde, _rho0(cfg, 1))}))
    frames.append(pd.DataFrame({"source": "closed_form", "K": 2, "t": t_ode,
                                "product": product_norm_k2_balanced(t_ode, cfg.f_tilde, _rho0(cfg, 2))}))

    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.width, generator=gen, dtype=torch.float64)
    x = cfg.f_tilde * x / x.norm()  # aligned unit-norm layers then give f̃ = ‖x‖
    X = x.unsqueeze(0).to(device=device, dtype=dtype)
    y = torch.ones(1, dtype=dtype, device=device)
    steps = log_spaced(cfg.gd_steps, cfg.num_probes)
    for i, K in enumerate(cfg.depths):  # 2. real GD on K-layer deep linear nets
        arch = Architecture("deep_linear", d_in=cfg.width, depth=K)
        start = _aligned_start(K, cfg.width, _rho0(cfg, K), cfg.init_noise, x, gen)
        weights = [w.to(device=device, dtype=dtype) for w in start]
        ens = Ensemble(arch, weights)
        res = gradient_descent(ens, "exp", X, y, lr=cfg.gd_lr, num_steps=cfg.gd_steps, reduction="sum",
                    probe_steps=steps, probes=(loss_probe, norms_probe, _f_tilde_probe(X)),
                    progress=(lambda s, n, i=i: progress((i + s / n) / len(cfg.depths))) if progress else None)
        tab = res.table
        t_gd = cfg.gd_lr * tab.step.to_numpy(dtype=float)
        rho_start = np.array([tab[f"norm_{k + 1}"].iloc[0] for k in range(K)])
        f0 = float(tab.f_tilde.iloc[0])
        ode = solve_norm_growth(rho_start, f0, t_gd)  # 3. the ODE from the run's own start
        printed = np.full(len(t_gd), np.nan)
        if K == 2:  # the printed K = 2 closed form: Ei(u) = 4 f̃ t + C, i.e. ours at time 2t
            printed = product_norm_k2_balanced(2 * t_gd, f0, float(np.sqrt(rho_start.prod())))
        frames.append(pd.DataFrame({
            "source": "gd", "K": K, "t": t_gd, "step": tab.step, "product": tab.norm_product,
            "layer_norm": tab[f"norm_{K}"], "log_loss": tab.log_loss, "f_tilde": tab.f_tilde,
            "ode_product": ode.product, "printed_product": printed, "diverged": tab.diverged,
        }))
    return pd.concat(frames, ignore_index=True)


THRESHOLDS = {
    "growth_tolerance": Threshold(
        0.15, "ours, chosen before seeing the numbers from the next-order terms of the expansion "
              "u − log t = a·log u + log(K f̃^{2/K}) − a/u + …, which we estimated to move the measured coefficient "
              "and slope by ≈ 3–10% over a window starting at t = t_max^0.1 (measured afterwards at the quick "
              "preset: 4–11%, largest for K = 10): relative tolerance |measured/predicted − 1|"),
    "growth_coefficient": Threshold("2 − 2/K", "paper: Lyu & Li 2020, L = Θ(1/(t (log t)^{2−2/K})) "
                                               "(implicit-bias-results.md); our corrected Eq. 57"),
    "layer_slope": Threshold("1/K", "paper: Lyu & Li 2020, ‖W_k‖ = Θ((log t)^{1/K}) (implicit-bias-results.md)"),
    "window": Threshold("t_max^0.1 … t_max", "ours: the last 90% of the ODE's log-time axis (Δ log log t = log 10)"),
    "k1_asymptote": Threshold(0.01, "ours (not recorded whether set before the numbers): |f̃ρ/log t − 1| at t_max; "
                                    "the closed form gives log(f̃²t + C)/log t − 1 ~ 1/log t"),
    "closed_form": Threshold(1e-7, "ours (not recorded whether set before the numbers): solve_ivp at rtol 1e-10 "
                                   "accumulated over the log-time axis"),
    "gd_vs_ode": Threshold(0.01, "ours (not recorded whether set before the numbers): the O(η) discretisation error "
                                 "of GD against gradient flow; the same for the printed Eq. 57"),
}


def _growth(g: pd.DataFrame, f: float, lo: float) -> tuple[float, float, float, float]:
    """(coefficient of log log t in f̃∏ρ − log t, slope of log ρ_k vs log log t, t_a, t_b) over [lo, t_max]."""
    a = g[g.t >= lo].iloc[0]
    b = g.iloc[-1]
    dll = np.log(np.log(b.t)) - np.log(np.log(a.t))
    excess = (f * b["product"] - np.log(b.t)) - (f * a["product"] - np.log(a.t))
    slope = (np.log(b.layer_norm) - np.log(a.layer_norm)) / dll
    return float(excess / dll), float(slope), float(a.t), float(b.t)


def claims(table: pd.DataFrame) -> list[Claim]:
    out: list[Claim] = []
    ode = table[table.source == "ode"]
    f = float(ode.f_tilde.iloc[0])
    t_max = float(ode.t.max())
    lo = t_max ** 0.1  # compare the last 90% of the log-time axis
    tol = float(THRESHOLDS["growth_tolerance"].value)
    one = ode[ode.K == 1].sort_values("t")
    coef1, slope1 = _growth(one, f, lo)[:2] if len(one) else (float("nan"), float("nan"))
    for K, g in ode.groupby("K"):
        g = g.sort_values("t")
        coef, slope, ta, tb = _growth(g, f, lo)
        if K == 1:
            b = g.iloc[-1]
            out.append(Claim(
                name="K=1: ρ ~ log t",
                statement="for one layer ‖w‖ ~ log t",
                source=f"{SOURCE}, Sec. 14 (after Eq. 57)", kind="identity",
                measured=float(abs(f * b["product"] / np.log(b.t) - 1)), relation="<=", bound=0.01,
                basis=f"|f̃ρ(t)/log t − 1| at t = {t_max:.0e} on the ODE; identity: the K = 1 flow has the closed "
                      f"form ρ = log(f̃²t + C)/f̃",
            ))
            continue
        a_K = 2 - 2 / K
        window = f"t = {ta:.1e} … {tb:.1e} on the gradient-flow ODE (balanced start)"
        out.append(Claim(
            name=f"K={K}: product − log t grows like (2 − 2/K) log log t",
            statement="for K > 1 the product of the layer norms grows faster than log t: f̃∏ρ_k = log t + "
                      "(2 − 2/K) log log t + O(1)",
            source=f"{SOURCE}, Sec. 14 and Fig. 7 (left); rate: Lyu & Li 2020 (implicit-bias-results.md)",
            measured=float(abs(coef / a_K - 1)), relation="<=", bound=tol,
            control=Control(setting="K = 1 (one layer: f̃ρ = log t + O(1), coefficient 0)",
                            measured=float(abs(coef1 / a_K - 1)),
                            note=f"K = 1's coefficient {coef1:.3f} held against K = {K}'s prediction {a_K:.3f}"),
            rule="one run (deterministic ODE)",
            basis=f"coefficient c = Δ(f̃∏ρ_k − log t)/Δlog log t over {window}: c = {coef:.3f} vs predicted "
                  f"2 − 2/K = {a_K:.3f}; measured |c/(2 − 2/K) − 1|, relative tolerance {tol:g}",
        ))
        out.append(Claim(
            name=f"K={K}: each layer grows like (log t)^(1/K)",
            statement="each layer's norm grows slower than in the one-layer case (log t): ρ_k ∝ (log t)^{1/K}",
            source=f"{SOURCE}, Sec. 14 and Fig. 7 (right); rate: Lyu & Li 2020 (implicit-bias-results.md)",
            measured=float(abs(slope * K - 1)), relation="<=", bound=tol,
            control=Control(setting="K = 1 (one layer: ρ ∝ log t, slope 1)", measured=float(abs(slope1 * K - 1)),
                            note=f"K = 1's slope {slope1:.3f} held against K = {K}'s prediction {1 / K:.3f}"),
            rule="one run (deterministic ODE)",
            basis=f"slope s of log ρ_k vs log log t over {window}: s = {slope:.3f} vs predicted 1/K = {1 / K:.3f} "
                  f"(log t itself has slope 1); measured |s·K − 1|, relative tolerance {tol:g}",
        ))
    cf = table[table.source == "closed_form"]
    for K, g in cf.groupby("K"):
        ref = ode[ode.K == K]
        if ref.empty:
            continue
        err = np.max(np.abs(ref["product"].to_numpy() - g["product"].to_numpy()) / g["product"].to_numpy())
        out.append(Claim(
            name=f"K={K}: ODE = closed form",
            statement=f"the K = {K} flow has the closed form of Sec. 14 (corrected)",
            source=f"{SOURCE}, Sec. 14 (K = 1: ρ ~ log t; K = 2: R = li⁻¹(·))", kind="identity",
            measured=float(err), relation="<=", bound=1e-7,
            basis=f"max relative difference of ∏ρ between solve_ivp (rtol 1e-10) and the closed form, "
                  f"t ≤ {t_max:.0e}",
        ))
    gd = table[table.source == "gd"]
    for K, g in gd.groupby("K"):
        g = g[g.t > 0]
        dev = float(np.max(np.abs(g["product"] - g.ode_product) / g.ode_product))
        out.append(Claim(
            name=f"K={K}: GD follows the ODE",
            statement="gradient descent on the K-layer network follows the norm-growth dynamics",
            source=f"{SOURCE}, Sec. 14 and Fig. 7", kind="identity",
            measured=dev, relation="<=", bound=0.01,
            basis=f"max relative deviation of GD's ∏‖W_k‖_F from the ODE started at the run's own norms, "
                  f"t ≤ {g.t.max():.0e}; identity: the ODE is exact for gradient flow (Euler's identity), so this "
                  f"checks the derivation and GD's O(η) discretisation error (1%, ours)",
        ))
        if K == 2 and g.printed_product.notna().any():
            dev_printed = float(np.max(np.abs(g["product"] - g.printed_product) / g["product"]))
            out.append(Claim(
                name="K=2: printed Eq. 57 (li⁻¹(f̃K²t + C)) matches GD",
                statement="for K = 2, R(t) = li⁻¹(f̃K²t + C) with R = e^{f̃∏ρ}",
                source=f"{SOURCE}, Sec. 14, text after Eq. 57",
                measured=dev_printed, relation="<=", bound=0.01,
                control_reason="the printed formula is refuted by GD itself, so a control that should fail could "
                               "not make the verdict stronger; the corrected closed form passes the same test "
                               "('K=2: GD follows the ODE')",
                basis="max relative deviation of GD's ∏‖W_k‖_F from the printed closed form, same tolerance "
                      "as 'GD follows the ODE'. A refutation is expected: the printed factor K² belongs to "
                      "layers tied to one scalar; independent layers give li⁻¹(2f̃t + C)",
            ))
    return out


def plot(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=4, nrows=1, width=3.3)
    ax_p, ax_r, ax_e, ax_gd = axes[0]
    ode = table[(table.source == "ode") & (table.t > 0)]
    gd = table[(table.source == "gd") & (table.t > 0)]
    f = float(ode.f_tilde.iloc[0])
    for K, g in ode.groupby("K"):
        line = ax_p.semilogx(g.t, g["product"], label=f"K = {K}")[0]
        colour = line.get_color()
        ax_r.semilogx(g.t, g.layer_norm, color=colour)
        ax_e.semilogx(g.t, f * g["product"] - np.log(g.t), color=colour)
        if K > 1:
            tt = g.t[g.t > 10].to_numpy()
            ax_e.semilogx(tt, f * product_norm_asymptotic(tt, f, int(K)) - np.log(tt), ":", color=colour, lw=0.8)
        gk = gd[gd.K == K]
        if len(gk):
            ax_gd.semilogx(gk.t, gk.ode_product, color=colour, lw=1.0)
            ax_gd.semilogx(gk.t, gk["product"], "o", ms=2.5, color=colour)
    tt = np.unique(ode.t[ode.t > 1])
    for ax in (ax_p, ax_r):
        ax.semilogx(tt, np.log(tt) / f, "k--", lw=0.8, label="log t / f̃")
    g2 = gd[(gd.K == 2) & gd.printed_product.notna()]
    if len(g2):
        ax_gd.semilogx(g2.t, g2.printed_product, "x", ms=3.5, color="black", label="K = 2, printed Eq. 57")
        ax_gd.legend()
    ax_p.set(xlabel="t", ylabel="∏_k ρ_k", title="(a) product of layer norms (ODE)")
    ax_r.set(xlabel="t", ylabel="ρ_k", title="(b) each layer's norm (ODE)")
    ax_e.set(xlabel="t", ylabel="f̃∏ρ_k − log t", title="(c) excess over log t (dotted: asympt.)")
    ax_gd.set(xlabel="t = η·step", ylabel="∏_k ‖W_k‖_F", title="(d) real GD (dots) vs ODE (lines)")
    ax_p.legend()
    return fig


EXPERIMENT = Experiment(
    name="poggio2018-fig7",
    title="Norm growth under GD with the exponential loss: ODE, closed forms and real GD (Sec. 14)",
    paper=SOURCE,
    config_type=Fig7Config,
    presets=PRESETS,
    run=run,
    plot=plot,
    claims=claims,
    description=__doc__ or "",
    thresholds=THRESHOLDS,
)
