"""Many zero minimizers of one bias-free ReLU net on an MNIST subset, each stopped at a training loss ε.

What :mod:`.norm_criterion` (``poggio2018-norm-criterion``) trains and measures, as plain functions:

- **Data** (:func:`mnist_tensors`): a class-balanced MNIST training subset of n images, standardised
  with the subset's mean and std, average-pooled ``pool × pool`` (28/pool pixels a side) and
  flattened; a class-balanced test subset treated the same way with the training statistics;
  a fraction of the training labels redrawn (:func:`implicitlab.data.randomize_labels`).
- **ε-stopping** (:class:`EpsilonCapture`): a probe of
  :func:`implicitlab.train.gradient_descent`, called at every step, that keeps, per run and per ε,
  the weights of the *first* GD iterate whose training loss is ≤ ε (from a per-run step on:
  perturbed runs are only stopped after their last perturbation).
- **Exact ε** (:func:`match_loss`): that iterate is within one GD step of ε (L ≤ ε < L of the
  previous iterate). A bias-free ReLU chain of K layers is positively homogeneous of degree K, so
  scaling every layer by a^{1/K} scales the outputs by a and the norm product by a. On the ray
  a ↦ L(a·f) (the direction kept), L is convex with L(0) = log C > ε ≥ L(1): exactly one a* ∈ (0, 1]
  has L(a*·f) = ε, found by bisection in float64. The "state at L = ε" is the captured iterate
  scaled to a*: its loss is ε to ``MATCH_RTOL`` relative, its direction (hence its classification
  errors and normalized margin) is the iterate's.
- **Perturbations** (:func:`perturb_runs_`): Fig. 5's rule per run of an ensemble — run r's layer k
  plus N(0, (scale·std(W_k[r]))²) noise, from the run's own generator.
- **Rank statistics** (:func:`rank_correlations`, :func:`bootstrap_rank`): Spearman's ρ and
  Kendall's τ_b with scipy's one-sided p-values, and a paired bootstrap over minimizers (vectorised
  ρ and τ_b, tested against scipy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...data import balanced_subset, load_mnist, randomize_labels, resolve_data_root, standardize
from ...losses import loss as loss_value
from ...models import Ensemble
from ...train import ProbeContext

__all__ = [
    "MATCH_RTOL",
    "MnistArrays",
    "MnistTensors",
    "EpsilonCapture",
    "bootstrap_rank",
    "kendall_tau_b",
    "load_mnist_arrays",
    "match_loss",
    "mnist_tensors",
    "noisy_labels",
    "perturb_runs_",
    "rank_correlations",
    "spearman_rho",
]

NUM_CLASSES = 10
MNIST_TRAIN, MNIST_TEST = 60_000, 10_000
MATCH_RTOL = 1e-10  # |L(a*·f)/ε − 1| after the bisection (float64)


@dataclass(frozen=True)
class MnistArrays:
    """MNIST as loaded: images ``uint8 (N, 28, 28)``, labels ``int64 (N,)``, both splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_mnist_arrays(data_dir: str | None = None) -> MnistArrays:
    """Both MNIST splits from ``data_dir`` (None: ``resolve_data_root``'s default); ``DataError`` if missing."""
    root = resolve_data_root(data_dir)
    return MnistArrays(*load_mnist(root, "train"), *load_mnist(root, "test"))


@dataclass(frozen=True)
class MnistTensors:
    """x ``(n, d)``, y ``(n,)`` (possibly partly random), y_clean ``(n,)``; x_test ``(m, d)``, y_test ``(m,)``."""

    x: torch.Tensor
    y: torch.Tensor
    y_clean: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _pool(images: torch.Tensor, pool: int) -> torch.Tensor:
    """``(N, 1, 28, 28)`` → ``(N, (28 // pool)²)`` by ``pool × pool`` averages."""
    return torch.nn.functional.avg_pool2d(images, pool).flatten(1)


def mnist_tensors(arrays: MnistArrays, n: int, *, n_test: int | None, pool: int, seed: int,
                  dtype: torch.dtype, device: torch.device | str) -> MnistTensors:
    """One pipeline seed's data: training subset (seed ``seed``) and test subset (``seed + 1``), pooled.

    Standardisation statistics come from the training subset (one channel). Labels are the true ones;
    :func:`noisy_labels` makes the partly random versions."""
    idx = balanced_subset(arrays.train_labels, n, seed=seed, num_classes=NUM_CLASSES)
    if n_test is None:
        test_idx = np.arange(len(arrays.test_labels))
    else:
        test_idx = balanced_subset(arrays.test_labels, n_test, seed=seed + 1, num_classes=NUM_CLASSES)
    train = standardize(arrays.train_images[idx], dtype=torch.float64)
    test = standardize(arrays.test_images[test_idx], train.mean, train.std, dtype=torch.float64)
    x, x_test = (_pool(t.images, pool).to(device=device, dtype=dtype) for t in (train, test))

    def labels(v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(v), dtype=torch.int64, device=device)

    y = labels(arrays.train_labels[idx])
    return MnistTensors(x, y, y, x_test, labels(arrays.test_labels[test_idx]))


def noisy_labels(y_clean: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """``y_clean`` with ``round(fraction·n)`` labels redrawn uniformly from the 10 classes (seeded)."""
    if fraction == 0.0:
        return y_clean
    y = randomize_labels(y_clean.cpu().numpy(), fraction, NUM_CLASSES, seed=seed)
    return torch.as_tensor(y, dtype=torch.int64, device=y_clean.device)


# --------------------------------------------------------------------------- ε-stopping


class EpsilonCapture:
    """A probe that keeps, per run and per ε, the weights of the first iterate with training loss ≤ ε.

    Call it at every step (``probe_steps = range(num_steps + 1)``); ``offset`` is the global step of
    the current ``gradient_descent`` call's step 0 (training may be split into calls, e.g. around
    perturbations). Run r may only be stopped at global steps ≥ ``armed_from[r]``. Returns
    ``{"loss": (R,)}`` (the mean training loss, as the ``loss`` probe does).

    Attributes after training:
        step: ``(E, R)`` int64 global step of the captured iterate (−1: never reached).
        loss: ``(E, R)`` float64 its training loss.
        weights: per ε, per layer, ``(R, out, in)`` the captured weights (NaN where never reached).
    """

    def __init__(self, model: Ensemble, epsilons, armed_from) -> None:
        R = model.num_runs
        self.epsilons = [float(e) for e in epsilons]
        self.armed_from = torch.as_tensor(list(armed_from), dtype=torch.int64).reshape(R)
        E = len(self.epsilons)
        self.step = torch.full((E, R), -1, dtype=torch.int64)
        self.loss = torch.full((E, R), math.nan, dtype=torch.float64)
        self.weights = [[torch.full_like(w.detach(), math.nan) for w in model.weights] for _ in range(E)]
        self.offset = 0

    @torch.no_grad()
    def __call__(self, ctx: ProbeContext) -> dict[str, torch.Tensor]:
        current = ctx.training_loss  # the step's gradient already evaluated L(θ) (full batch)
        if current is None:  # the last step, or a caller's loop without it
            current = loss_value(ctx.loss, ctx.model(ctx.X), ctx.y, ctx.reduction)  # (R,)
        step = self.offset + ctx.step
        value = current.detach().to("cpu", torch.float64)
        armed = self.armed_from <= step
        for e, eps in enumerate(self.epsilons):
            new = armed & (self.step[e] < 0) & (value <= eps)
            if bool(new.any()):
                self.step[e][new] = step
                self.loss[e][new] = value[new]
                mask = new.to(ctx.model.weights[0].device)
                for k, W in enumerate(ctx.model.weights):
                    self.weights[e][k][mask] = W.detach()[mask]
        return {"loss": current}


@torch.no_grad()
def match_loss(model: Ensemble, X: torch.Tensor, y: torch.Tensor, epsilon: float, *,
               iterations: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The output scale a* ∈ (0, 1] with L(a*·f) = ε for every run, and L(a*·f) (both ``(R,)`` float64).

    ``model``'s runs must have L(f) ≤ ε (the captured iterates); L is the mean cross-entropy on
    (X, y), computed in float64 from the outputs. L(a·f) is convex in a with L(0) = log C > ε, so the
    level ε is crossed once on (0, 1]: bisection, ``iterations`` halvings (the interval ends below
    float64 resolution: 2⁻⁵³ < 1.2e-16 after 53). Runs with non-finite weights get NaN.
    """
    out = model(X.to(model.weights[0].dtype)).to(torch.float64)  # (R, n, C)
    R = out.shape[0]
    lo = torch.zeros(R, dtype=torch.float64, device=out.device)
    hi = torch.ones(R, dtype=torch.float64, device=out.device)

    def L(a: torch.Tensor) -> torch.Tensor:
        return loss_value("ce", a.view(R, 1, 1) * out, y, "mean")

    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = L(mid) > epsilon
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    a = hi  # L(hi) ≤ ε always; hi − lo is at float64 resolution
    bad = ~torch.isfinite(out).all(-1).all(-1) | ~(L(torch.ones_like(a)) <= epsilon)
    a = torch.where(bad, torch.full_like(a, math.nan), a)
    return a, L(torch.nan_to_num(a, nan=1.0)).where(~bad, torch.full_like(a, math.nan))


@torch.no_grad()
def perturb_runs_(model: Ensemble, runs: torch.Tensor, scale: float, generators: list[torch.Generator]) -> None:
    """Poggio et al. 2018 Fig. 5's perturbation, per run: W_k[r] += N(0, (scale·std(W_k[r]))²) for the
    runs with ``runs[r]`` True, each from ``generators[r]`` (CPU, float64 draws, then cast)."""
    for r in torch.nonzero(runs).flatten().tolist():
        for W in model.weights:
            noise = torch.randn(W.shape[1:], generator=generators[r], dtype=torch.float64)
            std = float(W[r].detach().double().std())
            W[r].add_((scale * std * noise).to(device=W.device, dtype=W.dtype))


# --------------------------------------------------------------------------- rank statistics


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ along the last axis (Pearson correlation of average ranks); NaN for a constant row."""
    rx, ry = _ranks(x), _ranks(y)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ_b along the last axis: Σ_{i<j} sgn(x_i − x_j) sgn(y_i − y_j) / √((n₀ − n_x)(n₀ − n_y)),
    n₀ pairs, n_x (n_y) pairs tied in x (y); NaN when every pair is tied in x or in y."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    n = x.shape[-1]
    iu = np.triu_indices(n, 1)
    sx, sy = sx[..., iu[0], iu[1]], sy[..., iu[0], iu[1]]
    s = (sx * sy).sum(-1)
    den = np.sqrt((sx != 0).sum(-1) * (sy != 0).sum(-1).astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, s / np.where(den > 0, den, 1.0), np.nan)


def rank_correlations(x, y) -> dict[str, float]:
    """ρ, τ_b and their one-sided p-values for a positive association (scipy.stats)."""
    from scipy.stats import kendalltau, spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": math.nan, "rho_p": math.nan, "tau": math.nan, "tau_p": math.nan}
    rho = spearmanr(x, y, alternative="greater")
    tau = kendalltau(x, y, alternative="greater")
    return {"rho": float(rho.statistic), "rho_p": float(rho.pvalue), "tau": float(tau.statistic),
            "tau_p": float(tau.pvalue)}


def bootstrap_rank(columns: dict[str, np.ndarray], target: np.ndarray, *, resamples: int, seed: int,
                   statistic: str = "rho") -> dict[str, np.ndarray]:
    """Paired bootstrap over minimizers: for each column, ``resamples`` values of its ρ (or τ_b) with
    ``target``, all columns on the same resampled indices (so differences are paired)."""
    rng = np.random.default_rng(seed)
    m = len(target)
    idx = rng.integers(0, m, size=(resamples, m))
    f = spearman_rho if statistic == "rho" else kendall_tau_b
    t = np.asarray(target, dtype=np.float64)[idx]
    return {name: f(np.asarray(v, dtype=np.float64)[idx], t) for name, v in columns.items()}
