"""``soudry2018-linear``: GD on separable data converges in direction to the hard-margin SVM.

Soudry, Hoffer, Nacson, Gunasekar & Srebro (ICLR 2018 / JMLR 2018), as digested in
``shared/papers/implicit-bias-results.md``: for a linear predictor with an exponential-tailed loss
L(w) = Σ_n ℓ(y_n wᵀx_n) (sum convention), GD with η < 2/(β σ_max(X)²) from any start follows
w(t) = ŵ log t + ρ(t), ρ bounded, ŵ = argmin ‖w‖ s.t. y_n wᵀx_n ≥ 1. Hence

- margin gap γ(ŵ) − γ(w(t)) = O(1/log t), and the rate is tight (on data without mirrored
  support vectors — our synthetic set is generic Gaussian);
- ‖w(t)‖ grows like ‖ŵ‖ log t;  L(w(t)) = O(1/t);
- normalized GD, η_t = η/L(w_t) (Nacson et al. 2019), reaches the same direction far faster;
- square loss instead: GD changes w only in the row space of X, so the final weights of two runs
  differ by exactly the null-space component of their initialisations.

Step sizes. Plain GD: η = ``lr_factor``/σ_max(X)² (β = 1 for the exponential loss near the
solution, 1/4 for the logistic; both within 2/(βσ²)). Normalized GD differentiates log L, whose
Hessian is the covariance of the y_n x_n under the softmax weights, so it is ≼ max_n‖x_n‖² I and
η = ``normalized_lr_factor``/max_n‖x_n‖² is stable for factors < 2 (our derivation).

What kind of evidence each claim is. The four rate statements per (data set, loss) are
predictions; their controls come from the papers' contrasts, computed in the same run on the same
data: GD on the **square loss** (no exponential tail: w converges to a finite least-squares
solution, so the margin gap does not close, ‖w‖ stops growing and L tends to its positive minimum,
n > d) for "gap·log t bounded", "‖w‖ ~ ‖ŵ‖ log t" and "L = O(1/t)"; **normalized GD** (gap O(1/t),
Nacson et al.) for "the 1/log t rate is tight"; plain GD on the **logistic** loss (same η, no
normalization) for "normalized GD is faster". The square-loss statements with two inits are
identities of the GD update (it moves w only in the row space of X) and of linear least squares:
checks of our code. Every number a verdict depends on is in :data:`THRESHOLDS`.

Exact reference: the SVM is solved by Clarabel with an exact polish
(:func:`implicitlab.references.svm_max_margin`); angles are computed as 2·atan2(‖u−v‖, ‖u+v‖),
which stays exact at small angles where 1 − cos underflows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ...config import dtype_of, require, require_positive
from ...data import digits_binary, separable_through_origin
from ...models import Architecture, Ensemble
from ...references import min_norm_solution, null_space_projector, svm_max_margin
from ...seeds import derive_seed
from ...train import ProbeContext, log_spaced, loss_probe, gradient_descent
from ..claims import Claim, Control, Threshold
from ..experiment import Experiment

SOURCE = "Soudry et al. 2018"
DATASETS = ("synthetic", "digits01")


@dataclass(frozen=True)
class SoudryConfig:
    datasets: tuple[str, ...] = DATASETS
    losses: tuple[str, ...] = ("exp", "logistic")
    num_steps: int = 100_000  # plain GD iterations
    lr_factor: float = 1.0  # η = lr_factor / σ_max(X)²
    normalized_steps: int = 10_000  # normalized GD iterations (a tenth of num_steps by default)
    normalized_lr_factor: float = 1.0  # η = factor / max_n ‖x_n‖²
    num_probes: int = 60  # log-spaced probe steps
    synthetic_n: int = 40
    synthetic_d: int = 5
    synthetic_min_margin: float = 0.2
    square_n: int = 10  # underdetermined regression for the square-loss claim (n < d)
    square_d: int = 20
    square_steps: int = 5_000
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        require(len(self.datasets) > 0, "datasets must not be empty")
        for name in self.datasets:
            require(name in DATASETS, f"unknown dataset {name!r}; choose from {list(DATASETS)}")
        for name in self.losses:
            require(name in ("exp", "logistic"), f"loss {name!r} is not exponential-tailed (exp, logistic)")
        for name in ("num_steps", "normalized_steps", "num_probes", "synthetic_n", "synthetic_d",
                     "square_n", "square_d", "square_steps"):
            require(getattr(self, name) >= 1, f"{name} must be ≥ 1, got {getattr(self, name)}")
        require(self.num_steps >= 100, "num_steps must be ≥ 100 (the claims read the last two decades)")
        require_positive("lr_factor", self.lr_factor)
        require_positive("normalized_lr_factor", self.normalized_lr_factor)
        require_positive("synthetic_min_margin", self.synthetic_min_margin)
        require(self.lr_factor < 2.0, "lr_factor must be < 2 (GD is stable for η < 2/(βσ_max²))")
        require(self.square_n < self.square_d, "the square-loss claim needs n < d (a null space)")
        dtype_of(self.dtype)


PRESETS = {
    "tiny": SoudryConfig(datasets=("synthetic",), losses=("exp", "logistic"), num_steps=2_000, normalized_steps=200,
                         num_probes=20, synthetic_n=20, square_steps=3_000),
    "quick": SoudryConfig(),
    "full": SoudryConfig(num_steps=1_000_000, normalized_steps=100_000, num_probes=90),
}


def load_dataset(name: str, cfg: SoudryConfig) -> tuple[np.ndarray, np.ndarray]:
    if name == "synthetic":
        return separable_through_origin(cfg.synthetic_n, cfg.synthetic_d, min_margin=cfg.synthetic_min_margin,
                                        seed=cfg.seed)
    return digits_binary(0, 1)


def _direction_probe(X: torch.Tensor, y: torch.Tensor, direction: torch.Tensor, svm_margin: float):
    """Probe: angle to ŵ, margin gap γ(ŵ) − γ(w) and ‖w‖ of each run of a depth-1 ensemble."""

    def probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
        w = ctx.model.end_to_end()[:, 0, :]  # (R, d)
        norm = w.norm(dim=-1)
        u = w / norm.unsqueeze(-1)
        angle = 2 * torch.atan2((u - direction).norm(dim=-1), (u + direction).norm(dim=-1))
        margin = (y * (u @ X.T)).amin(-1)  # (R,)
        return {"angle": angle, "margin_gap": svm_margin - margin, "w_norm": norm}

    return probe


def run(cfg: SoudryConfig, *, device: torch.device = torch.device("cpu"), progress=None) -> pd.DataFrame:
    dtype = dtype_of(cfg.dtype)
    frames = []
    jobs = len(cfg.datasets) * (len(cfg.losses) + 2) + 1
    done = 0

    def tick():
        nonlocal done
        done += 1
        if progress:
            progress(done / jobs)

    for ds in cfg.datasets:
        Xn, yn = load_dataset(ds, cfg)
        svm = svm_max_margin(Xn, yn)
        X = torch.tensor(Xn, dtype=dtype, device=device)
        y = torch.tensor(yn, dtype=dtype, device=device)
        direction = torch.tensor(svm.direction, dtype=dtype, device=device)
        probe = _direction_probe(X, y, direction, svm.margin)
        arch = Architecture("deep_linear", d_in=X.shape[1], depth=1)
        sigma2 = float(np.linalg.norm(Xn, 2) ** 2)
        max_row2 = float((Xn**2).sum(1).max())
        runs = [(loss, "gd", cfg.lr_factor / sigma2, cfg.num_steps, False) for loss in cfg.losses]
        runs.append(("exp", "normalized_gd", cfg.normalized_lr_factor / max_row2, cfg.normalized_steps, True))
        for loss_name, method, lr, steps, normalized in runs:
            ens = Ensemble(arch, [torch.zeros(1, 1, X.shape[1], dtype=dtype, device=device)])  # w(0) = 0
            res = gradient_descent(ens, loss_name, X, y, lr=lr, num_steps=steps, reduction="sum",
                        normalized=normalized, probe_steps=log_spaced(steps, cfg.num_probes),
                        probes=(loss_probe, probe))
            t = res.table.drop(columns=["run"])
            t.insert(0, "dataset", ds)
            t.insert(1, "loss_name", loss_name)
            t.insert(2, "method", method)
            t["lr"] = lr
            t["svm_norm"] = float(np.linalg.norm(svm.w))
            t["svm_margin"] = svm.margin
            frames.append(t)
            tick()
        frames.append(_square_control(Xn, yn, svm, 0.5 / sigma2, cfg.num_steps, cfg.num_probes, ds))
        tick()

    frames.append(_square_null_space(cfg, dtype, device))
    tick()
    return pd.concat(frames, ignore_index=True)


def _square_control(Xn: np.ndarray, yn: np.ndarray, svm, lr: float, steps: int, num_probes: int,
                    ds: str) -> pd.DataFrame:
    """The rate claims' control: GD on the square loss L = Σ_n (y_n − wᵀx_n)² from w = 0, same data and steps.

    The iterates are computed exactly from GD's linear recurrence instead of a training loop (it costs
    nothing and is the same sequence up to rounding): in the eigenbasis XᵀX = V diag(s) Vᵀ,
    c_{t+1} = (1 − 2ηs)c_t + 2η Vᵀ Xᵀy, so c_t = (1 − (1 − 2ηs)^t)·VᵀXᵀy/s (zero where s = 0). The same
    columns as the probes of the exponential-loss runs (angle, margin_gap, w_norm, log_loss).
    """
    s, V = np.linalg.eigh(Xn.T @ Xn)
    b = V.T @ (Xn.T @ yn)
    keep = s > 1e-12 * s.max()
    fixed = np.where(keep, b / np.where(keep, s, 1.0), 0.0)
    step = log_spaced(steps, num_probes)
    factor = 1.0 - np.power.outer(1.0 - 2.0 * lr * s, step.astype(np.float64)).T  # (probes, d)
    W = (factor * fixed) @ V.T  # (probes, d); w(0) = 0
    norm = np.linalg.norm(W, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        U = W / norm[:, None]
        direction = svm.direction
        angle = 2 * np.arctan2(np.linalg.norm(U - direction, axis=1), np.linalg.norm(U + direction, axis=1))
        margin = (yn * (U @ Xn.T)).min(1)
        log_loss = np.log(((yn - W @ Xn.T) ** 2).sum(1))
    return pd.DataFrame({
        "dataset": ds, "loss_name": "square", "method": "square_control", "step": step, "log_loss": log_loss,
        "angle": angle, "margin_gap": svm.margin - margin, "w_norm": norm, "lr": lr,
        "svm_norm": float(np.linalg.norm(svm.w)), "svm_margin": svm.margin,
    })


def _square_null_space(cfg: SoudryConfig, dtype, device) -> pd.DataFrame:
    """Two inits, square loss, n < d: final difference vs the inits' null-space component."""
    rng = np.random.default_rng(derive_seed(cfg.seed, "square_data"))
    Xn = rng.standard_normal((cfg.square_n, cfg.square_d))
    yn = np.sign(rng.standard_normal(cfg.square_n))
    X = torch.tensor(Xn, dtype=dtype, device=device)
    y = torch.tensor(yn, dtype=dtype, device=device)
    arch = Architecture("deep_linear", d_in=cfg.square_d, depth=1)
    ens = Ensemble.create(arch, [1.0, 1.0], [derive_seed(cfg.seed, "square_init", r) for r in range(2)], dtype=dtype, device=device)
    w0 = ens.end_to_end()[:, 0, :].detach().cpu().numpy()
    lr = 0.5 / float(np.linalg.norm(Xn, 2) ** 2)  # sum of squares: Hessian 2XᵀX, stable below 1/σ²
    res = gradient_descent(ens, "square", X, y, lr=lr, num_steps=cfg.square_steps, reduction="sum",
                probe_steps=log_spaced(cfg.square_steps, 20))
    wT = ens.end_to_end()[:, 0, :].detach().cpu().numpy()
    P = null_space_projector(Xn)
    w_mn = min_norm_solution(Xn, yn).solution
    expected_diff = P @ (w0[0] - w0[1])
    null_err = np.linalg.norm((wT[0] - wT[1]) - expected_diff) / np.linalg.norm(expected_diff)
    mn_err = max(np.linalg.norm(wT[r] - (w_mn + P @ w0[r])) / np.linalg.norm(w_mn + P @ w0[r]) for r in range(2))
    t = res.table.copy()
    t.insert(0, "dataset", f"gaussian{cfg.square_n}x{cfg.square_d}")
    t.insert(1, "loss_name", "square")
    t.insert(2, "method", "gd_two_inits")
    t["lr"] = lr
    last = t.step == cfg.square_steps
    t.loc[last, "null_space_error"] = null_err
    t.loc[last, "min_norm_plus_null_error"] = mn_err
    return t


# ----------------------------------------------------------------------------- claims


THRESHOLDS = {
    "gap_bounded": Threshold(1.1, "ours (not recorded whether set before the numbers; set with the experiment's "
                                  "first version): max of gap·log t over the last two decades ÷ its value at the window "
                                  "start; 10% for the transient of the bounded ρ(t)"),
    "gap_tight": Threshold(0.5, "ours (not recorded whether set before the numbers): gap·log t at the end ÷ at the "
                                "window start; a polynomial rate sends it towards 0 (≈ 0.01 over two decades for 1/t)"),
    "w_norm_slope": Threshold(0.2, "ours (not recorded whether set before the numbers): |d‖w‖/d log t ÷ ‖ŵ‖ − 1| over "
                                   "the last decade; 20% for the O(1/log t) transient"),
    "loss_slope": Threshold(-0.9, "paper: −1 (L = O(1/t)), with a 0.1 tolerance, ours (not recorded whether set "
                                  "before the numbers); slope of log L vs log t over the last decade"),
    "normalized_speedup": Threshold(0.1, "ours (not recorded whether set before the numbers): 'far fewer steps' read "
                                         "as ≥ 10×"),
    "square_identity": Threshold(1e-8, "exact: the GD update moves w only in the row space of X; 1e-8 is float64 "
                                       "rounding grown over the run"),
    "windows": Threshold("last two decades (gap), last decade (‖w‖, loss)", "ours: the late, asymptotic part of a "
                                                                             "log-spaced run"),
}
SQUARE_SETTING = "GD on the square loss from w = 0, same data and steps (η = 0.5/σ_max²): no exponential tail"
SQUARE_NOTE = "GD converges to a finite least-squares solution: the gap stays > 0, ‖w‖ and L level off (L* > 0, n > d)"


def _window(g: pd.DataFrame, decades: float) -> pd.DataFrame:
    T = g.step.max()
    return g[(g.step >= T / 10**decades) & (g.step > 1)]


def _rates(g: pd.DataFrame) -> dict[str, float]:
    """The four rate statistics of one curve (sorted by step): gap·log t max and end ÷ start over the last two
    decades, |d‖w‖/d log t ÷ ‖ŵ‖ − 1| and the log L vs log t slope over the last decade."""
    g = g.sort_values("step")
    w2 = _window(g, 2)
    gl = w2.margin_gap * np.log(w2.step)
    start = gl.iloc[0]
    w1 = _window(g, 1)
    slope = (w1.w_norm.iloc[-1] - w1.w_norm.iloc[0]) / math.log(w1.step.iloc[-1] / w1.step.iloc[0])
    ll = w1.log_loss.to_numpy()
    ls = np.log(w1.step.to_numpy())
    return {"gap_bounded": float(gl.max() / start), "gap_tight": float(gl.iloc[-1] / start),
            "w_norm": float(abs(slope / float(g.svm_norm.iloc[0]) - 1)),
            "loss_slope": float((ll[-1] - ll[0]) / (ls[-1] - ls[0]))}


def _curve_claims(ds: str, loss_name: str, g: pd.DataFrame, square: pd.DataFrame | None,
                  normalized: pd.DataFrame | None) -> list[Claim]:
    g = g.sort_values("step")
    tag = f"{ds}/{loss_name}"
    r = _rates(g)
    nan = float("nan")
    sq = _rates(square) if square is not None and len(square) else dict.fromkeys(r, nan)
    ng = _rates(normalized) if normalized is not None and len(normalized) else dict.fromkeys(r, nan)
    svm_norm = float(g.svm_norm.iloc[0])

    def square_control(key: str) -> Control:
        return Control(setting=SQUARE_SETTING, measured=sq[key], note=SQUARE_NOTE)

    return [
        Claim(
            name=f"{tag}: gap·log t bounded",
            statement="margin gap γ(ŵ) − γ(w(t)) = O(1/log t)",
            source=f"{SOURCE}, Thm 3 (rates)",
            measured=r["gap_bounded"], relation="<=", bound=THRESHOLDS["gap_bounded"].value,
            control=square_control("gap_bounded"), rule="one run (deterministic GD from w = 0)",
            basis="max of gap·log t over the last two decades of steps ÷ its value at the window start; "
                  "10% tolerance (ours) for the transient of the bounded ρ(t)",
        ),
        Claim(
            name=f"{tag}: gap rate is 1/log t (tight)",
            statement="the O(1/log t) rate is tight on data without symmetric support vectors",
            source=f"{SOURCE}, Thm 3 (tightness)",
            measured=r["gap_tight"], relation=">=", bound=THRESHOLDS["gap_tight"].value,
            control=Control(setting="normalized GD (η_t ∝ 1/L) on the exponential loss, same data",
                            measured=ng["gap_tight"],
                            note="its gap falls like O(1/t) (Nacson et al. 2019), so gap·log t → 0"),
            rule="one run (deterministic GD from w = 0)",
            basis="gap·log t at the last step ÷ at the window start; a faster (polynomial) rate "
                  "would send it to 0 (≈0.01 over two decades)",
        ),
        Claim(
            name=f"{tag}: ‖w‖ grows like ‖ŵ‖ log t",
            statement="‖w(t)‖ / log t → ‖ŵ‖",
            source=f"{SOURCE}, Thm 3 (w(t) = ŵ log t + ρ(t))",
            measured=r["w_norm"], relation="<=", bound=THRESHOLDS["w_norm_slope"].value,
            control=square_control("w_norm"), rule="one run (deterministic GD from w = 0)",
            basis=f"|d‖w‖/d log t ÷ ‖ŵ‖ − 1| over the last decade (‖ŵ‖ = {svm_norm:.4g} from the exact SVM); "
                  "20% tolerance (ours) for the O(1/log t) transient",
        ),
        Claim(
            name=f"{tag}: loss = O(1/t)",
            statement="L(w(t)) = O(1/t)",
            source=f"{SOURCE}, Thm 3",
            measured=r["loss_slope"], relation="<=", bound=THRESHOLDS["loss_slope"].value,
            control=square_control("loss_slope"), rule="one run (deterministic GD from w = 0)",
            basis="slope of log L vs log t over the last decade (−1 for 1/t); 0.1 tolerance (ours)",
        ),
    ]


def _steps_to_reach(curve: pd.DataFrame, target: float, T: int, bound: float) -> tuple[float, str]:
    """Steps ``curve`` needs to reach an angle ≤ target, ÷ T; if it never does, (its steps + 1)/T as a lower bound
    (NaN with the reason when that bound cannot decide against ``bound``)."""
    reached = curve[curve.angle <= target]
    if len(reached):
        return float(reached.step.iloc[0] / T), ""
    lower = float((curve.step.max() + 1) / T)
    if lower > bound:
        return lower, ""
    return float("nan"), (f"the target angle was not reached within {int(curve.step.max())} steps, too few to "
                          f"decide against {bound:g}·{T}")


def claims(table: pd.DataFrame) -> list[Claim]:
    out: list[Claim] = []
    curves = table[table.method.isin(["gd", "normalized_gd"])]
    controls = table[table.method == "square_control"]
    for (ds, loss_name), g in curves[curves.method == "gd"].groupby(["dataset", "loss_name"], sort=False):
        sq = controls[controls.dataset == ds]
        ng = curves[(curves.dataset == ds) & (curves.method == "normalized_gd")]
        out += _curve_claims(ds, loss_name, g, sq, ng)
    bound = THRESHOLDS["normalized_speedup"].value
    for ds, g in curves.groupby("dataset", sort=False):
        gd = g[(g.method == "gd") & (g.loss_name == "exp")].sort_values("step")
        ngd = g[g.method == "normalized_gd"].sort_values("step")
        if gd.empty or ngd.empty:
            continue
        target = gd.angle.iloc[-1]
        T = int(gd.step.max())
        ratio, why = _steps_to_reach(ngd, target, T, bound)
        logi = g[(g.method == "gd") & (g.loss_name == "logistic")].sort_values("step")
        ctrl = _steps_to_reach(logi, target, T, bound)[0] if len(logi) else float("nan")
        out.append(Claim(
            name=f"{ds}: normalized GD is faster",
            statement="normalized GD (η_t ∝ 1/L) reaches the max-margin direction in far fewer steps",
            source="Nacson et al. 2019 (implicit-bias-results.md)",
            measured=ratio, relation="<=", bound=bound, no_data_reason=why,
            control=Control(setting="plain GD on the logistic loss, same η = lr_factor/σ_max² (no normalization)",
                            measured=ctrl,
                            note="steps it needs to reach the same angle ÷ T; (steps + 1)/T if it never does"),
            rule="one run (deterministic GD from w = 0)",
            basis=f"steps normalized GD needs to reach GD's final angle to ŵ ({target:.3g} rad after "
                  f"{T} steps) ÷ GD's steps; 'far fewer' read as ≥ 10× (ours)",
        ))
    sq = table[(table.method == "gd_two_inits")].dropna(subset=["null_space_error"])
    if len(sq):
        row = sq.iloc[0]
        out.append(Claim(
            name="square loss: inits differ by null-space component",
            statement="with the square loss, the null-space component of the init never changes",
            source=f"{SOURCE} (square-loss remark, implicit-bias-results.md)", kind="identity",
            measured=float(row.null_space_error), relation="<=", bound=THRESHOLDS["square_identity"].value,
            basis="‖(w_A − w_B)(T) − P_null(w_A − w_B)(0)‖ / ‖P_null(w_A − w_B)(0)‖, P_null from an SVD; "
                  "identity of the GD update (the gradient Xᵀr lies in the row space); 1e-8 = float64 rounding "
                  "grown over the run",
        ))
        out.append(Claim(
            name="square loss: GD → min-norm + null-space init",
            statement="GD converges to the minimum-norm interpolant plus the init's null-space part",
            source=f"{SOURCE} (square-loss remark)", kind="identity",
            measured=float(row.min_norm_plus_null_error), relation="<=", bound=THRESHOLDS["square_identity"].value,
            basis="max over both runs of ‖w(T) − (w_mn + P_null w(0))‖/‖…‖ with w_mn from an SVD; identity of "
                  "linear least squares (GD contracts linearly on the row space), so 1e-8 is reached well within "
                  "the steps",
        ))
    return out


# ----------------------------------------------------------------------------- figure


def plot(table: pd.DataFrame):
    from ...plots import figure

    fig, axes = figure(ncols=4, nrows=1, width=3.3)
    ax_gap, ax_ang, ax_norm, ax_loss = axes[0]
    curves = table[table.method.isin(["gd", "normalized_gd"]) & (table.step > 0)]
    for (ds, loss_name, method), g in curves.groupby(["dataset", "loss_name", "method"], sort=False):
        label = f"{ds} {loss_name}" + (" (normalized GD)" if method == "normalized_gd" else "")
        style = "--" if method == "normalized_gd" else "-"
        line = ax_gap.loglog(g.step, g.margin_gap, style, label=label)[0]
        ax_ang.loglog(g.step, g.angle, style, color=line.get_color())
        if method == "gd":
            ax_norm.plot(np.log(g.step), g.w_norm, style, color=line.get_color())
            lt = np.log(g.step.to_numpy())
            anchor = g.w_norm.iloc[-1] + g.svm_norm.iloc[0] * (lt - lt[-1])  # slope ‖ŵ‖ through the end
            ax_norm.plot(lt, anchor, ":", color=line.get_color(), lw=0.8)
        ax_loss.loglog(g.step, np.exp(g.log_loss), style, color=line.get_color())
    for ds, g in table[(table.method == "square_control") & (table.step > 0)].groupby("dataset", sort=False):
        ax_gap.loglog(g.step, g.margin_gap, ":", color="grey", lw=1.0, label=f"{ds} square loss (control)")
        ax_norm.plot(np.log(g.step), g.w_norm, ":", color="grey", lw=1.0)
    ax_gap.set(xlabel="step t", ylabel="margin gap γ(ŵ) − γ(w)", title="(a) margin gap → 0 like 1/log t")
    ax_ang.set(xlabel="step t", ylabel="angle to ŵ (rad)", title="(b) direction → SVM")
    ax_norm.set(xlabel="log t", ylabel="‖w‖", title="(c) ‖w‖ vs log t (dotted: slope ‖ŵ‖)")
    ax_loss.set(xlabel="step t", ylabel="loss L", title="(d) L = O(1/t)")
    gd = curves[curves.method == "gd"]
    if len(gd):
        tt = np.geomspace(max(gd.step.min(), 1), gd.step.max(), 10)
        ref = np.exp(gd[gd.step == gd.step.max()].log_loss.max()) * gd.step.max() / tt
        ax_loss.loglog(tt, ref, "k:", lw=0.8, label="∝ 1/t")
        ax_loss.legend()
    ax_gap.legend()
    return fig


EXPERIMENT = Experiment(
    name="soudry2018-linear",
    title="GD on separable data → hard-margin SVM direction (logistic, exp; normalized GD; square loss)",
    paper=SOURCE,
    config_type=SoudryConfig,
    presets=PRESETS,
    run=run,
    plot=plot,
    claims=claims,
    description=__doc__ or "",
    thresholds=THRESHOLDS,
)
