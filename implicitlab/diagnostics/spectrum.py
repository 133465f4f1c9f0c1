"""Hessian spectra: the explicit matrix for small models, and stochastic estimates for large ones.

Small models (D up to a few thousand): :func:`explicit_hessian` forms the D × D Hessian with
``torch.func.hessian`` over the flattened parameters in float64, :func:`hessian_spectrum` gives all
its eigenvalues, and :func:`spectrum_counts` counts zero, negative, positive and distinct nonzero
eigenvalues relative to the top one (Poggio et al. 2018, Thm 4 / Sec. 12.3: at a zero-loss minimum
of an overparametrized model most eigenvalues are zero).

Large models, as plain functions of an operator ``A`` (``A.shape == (D, D)``, ``A @ v`` for
``v`` ``(D,)``; a HessianOperator or a dense tensor) or of a model with the one calling convention
``f(model, loss, X, y, *, ...)`` (its HessianOperator is built; a bfloat16/float16 model or
operator is refused before any product), each with an error bar (traces: a standard error that
holds at small budgets and a 95% interval, :class:`TraceEstimate`; SLQ: over the random probes):

- :func:`slq_spectral_density` — stochastic Lanczos quadrature (Lin, Saad & Yang, SIAM Review
  2016; Ghorbani, Krishnan & Xiao, ICML 2019): for Rademacher probes v, m Lanczos steps from
  v/√D give Gauss nodes θ_i and weights τ_i² with vᵀf(A)v/D ≈ Σ_i τ_i² f(θ_i), exact for
  polynomials f of degree ≤ 2m − 1; averaging over probes estimates the spectral density
  φ(t) = (1/D) Σ_j δ(t − λ_j) and its moments.
- :func:`hutchinson_trace` — tr(A) ≈ (1/m) Σ_i v_iᵀ A v_i (Hutchinson 1990), Rademacher probes.
- :func:`hutchpp_trace` — Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021): the trace of A on
  the range of A S exactly (S: m/3 probes), Hutchinson on the rest; error O(1/m) instead of
  O(1/√m) for matrices with a decaying spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .lanczos import Lanczos, check_curvature_dtype, operator_dim
from .determinism import NondeterministicHessianError, suspects_in_train_mode
from .distributed import resolve_group
from .forward_ad import load_jvp_decompositions
from .hessian import HessianOperator
from .objective import DatasetObjective, LossSpec, ParamFilter, Penalty


# ------------------------------------------------------------------------ explicit Hessian ---
def explicit_hessian(
    model: nn.Module,
    loss: LossSpec,
    X,
    y=None,
    *,
    chunk_size: int | None = None,
    reduction: str | None = None,
    dtype: torch.dtype = torch.float64,
    params: ParamFilter = None,
    penalty: Penalty | None = None,
    mode: str = "eval",
    batch=None,
    distributed=None,
) -> Tensor:
    """The D × D Hessian of the data-set objective (that of :class:`HessianOperator`).

    Parameters, floating buffers and floating data are cast to ``dtype`` (float64 by default);
    the model itself is not modified (nor its mode or buffers). Rows/columns follow
    ``named_parameters()`` order over the variables (the parameters with ``requires_grad``, or
    those ``params`` selects). ``loss``, ``reduction``, ``params``, ``penalty`` (added once),
    ``mode`` (``"eval"`` by default, whatever mode the model is in) and ``batch`` as for
    :class:`HessianOperator`; the same checks run first (finite data, a decomposable loss
    callable). Memory: D² numbers plus ``torch.func.hessian``'s workspace for one chunk — for
    small models only. Raises ``NondeterministicHessianError`` for ``mode="model"`` with dropout or
    batch norm in train mode. ``distributed`` as for :class:`HessianOperator`: each rank passes its
    shard, the shards' sums Σ_c n_c ∇²R_c are gathered and added in rank order (the same matrix,
    bit for bit, on every rank), the penalty's Hessian added once.
    """
    group = resolve_group(distributed)
    if group is not None and mode == "train_batchnorm":
        raise ValueError("mode='train_batchnorm' needs the full data set in one chunk: not data-parallel "
                         "(use mode='eval' or distributed=False)")
    if mode == "model":
        training = [n or kind for n, kind in suspects_in_train_mode(model)]
        if training:
            raise NondeterministicHessianError(
                f"dropout/batch-norm modules in train mode {training}: the Hessian is not one fixed matrix "
                "(random masks, batch statistics). Call model.eval() first, or measure a declared "
                "objective (mode='eval', the default, or mode='train_batchnorm')."
            )
    def build() -> DatasetObjective:
        return DatasetObjective(model, loss, X, y, chunk_size=chunk_size, reduction=reduction, params=params,
                                penalty=penalty, mode=mode, batch=batch)

    obj = build() if group is None else group.agree(build, "checking the data and options")
    names, shapes, numels = obj.names, obj.shapes, obj.numels
    cast = lambda t: t.detach().to(dtype) if t.is_floating_point() else t.detach()
    constants = {n: cast(t) for n, t in obj.constants().items()}
    flat = torch.cat([cast(p).reshape(-1) for p in obj.params().values()])

    def variables(theta: Tensor) -> dict[str, Tensor]:
        return {n: p.view(s) for n, p, s in zip(names, torch.split(theta, numels), shapes)}

    total = torch.zeros(flat.numel(), flat.numel(), dtype=dtype, device=obj.device)
    count = 0
    load_jvp_decompositions()  # torch.func.hessian is forward-over-reverse: load them quietly first
    for Xc, yc in obj.chunks(dtype):
        chunk_loss = lambda theta: obj.chunk_loss({**constants, **variables(theta)}, Xc, yc)
        n_c = int(Xc.shape[0])
        if mode == "train_batchnorm":
            # torch.func.hessian over the flat vector gets batch norm's batch-statistics cross terms
            # wrong in torch 2.13 (an asymmetric 0.14 where the exact value is 0 on the test model);
            # unbatched jvp-of-grad columns on the parameter dict are right to rounding
            grad_fn = torch.func.grad(lambda p: obj.chunk_loss({**constants, **p}, Xc, yc))
            point = variables(flat)
            eye = torch.eye(flat.numel(), dtype=dtype, device=obj.device)
            cols = [torch.func.jvp(grad_fn, (point,), (variables(e),))[1] for e in eye]
            total += n_c * torch.stack([torch.cat([c[n].reshape(-1) for n in names]) for c in cols], dim=1)
        else:
            total += n_c * torch.func.hessian(chunk_loss)(flat)
        count += n_c
    if count == 0:
        raise ValueError("the data set is empty (the loader yielded no examples)")
    if group is not None:
        group.check_same((obj.names, str(dtype), obj.reduction, penalty is not None),
                         "the variables, dtype, reduction and penalty")
        flat_total = torch.cat([total.reshape(-1), torch.tensor([count], dtype=dtype, device=total.device)])
        summed = group.sum_in_rank_order(flat_total, "explicit-Hessian")
        total, count = summed[:-1].reshape(total.shape), int(summed[-1])
    total = total if obj.reduction == "sum" else total / count
    if penalty is not None:
        fixed = {n: v for n, v in constants.items() if n in dict(model.named_parameters())}
        total = total + torch.func.hessian(lambda theta: obj.penalty_value({**fixed, **variables(theta)}))(flat)
    return total


def hessian_spectrum(H: Tensor) -> Tensor:
    """All eigenvalues ``(D,)`` of a symmetric matrix, ascending, in float64 (symmetrised first).

    ``H`` ``(D, D)`` is cast to float64 and replaced by ½(H + Hᵀ). The eigenvalues come from
    ``torch.linalg.eigvalsh`` (LAPACK's divide-and-conquer driver, syevd); should it fail to
    converge — it can on the highly degenerate Hessians at zero-loss minima, with hundreds of
    zero eigenvalues (Poggio et al. 2018, Sec. 12.3) — from LAPACK's QR-iteration driver (syev,
    ``scipy.linalg.eigh(driver="ev")``) on the same symmetrised matrix, on the CPU. Same device as ``H``.
    """
    H = torch.as_tensor(H).to(torch.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"expected a square matrix, got {tuple(H.shape)}")
    symmetric = 0.5 * (H + H.T)
    try:
        return torch.linalg.eigvalsh(symmetric)
    except torch.linalg.LinAlgError:  # syevd did not converge: the slower, sturdier syev
        from scipy.linalg import eigh

        values = eigh(symmetric.cpu().numpy(), eigvals_only=True, driver="ev")
        return torch.from_numpy(values).to(symmetric.device)


@dataclass(frozen=True)
class SpectrumCounts:
    """Counts of eigenvalues relative to the largest magnitude ``scale`` = max |λ|.

    zero: |λ| ≤ rtol·scale; negative / positive: the others by sign; distinct_nonzero: clusters
    of nonzero eigenvalues, consecutive sorted values joined when they differ by ≤ rtol·scale.
    """

    zero: int
    negative: int
    positive: int
    distinct_nonzero: int
    scale: float
    rtol: float


def spectrum_counts(eigvals: Tensor, rtol: float = 1e-8) -> SpectrumCounts:
    """Counts of zero, negative, positive and distinct nonzero eigenvalues (see SpectrumCounts).

    ``rtol`` is relative to max |λ|; in float64 an explicit Hessian's zero eigenvalues come out
    near 1e-15·max|λ|, so the default 1e-8 separates them from genuine small curvature above
    that level. Clustering is single-linkage: a run of values each within rtol·scale of the next
    counts once.
    """
    lam = torch.as_tensor(eigvals).to(torch.float64).reshape(-1)
    if lam.numel() == 0:
        raise ValueError("no eigenvalues given")
    if not torch.isfinite(lam).all():
        raise ValueError("eigenvalues must be finite")
    if not rtol >= 0:
        raise ValueError(f"rtol must be ≥ 0, got {rtol}")
    scale = float(lam.abs().max())
    threshold = rtol * scale
    zero = lam.abs() <= threshold
    nonzero = torch.sort(lam[~zero]).values
    distinct = int(nonzero.numel() > 0) + int((torch.diff(nonzero) > threshold).sum())
    return SpectrumCounts(
        zero=int(zero.sum()),
        negative=int((lam[~zero] < 0).sum()),
        positive=int((lam[~zero] > 0).sum()),
        distinct_nonzero=distinct,
        scale=scale,
        rtol=rtol,
    )


# ------------------------------------------------------------------ stochastic estimators ---
def _as_operator(A, loss, X, y, **options):
    """``A`` itself (an operator or a matrix), or, for a model ``A``, its HessianOperator with
    ``loss``, ``X``, ``y`` and the ``options`` (chunk_size, reduction, reuse, check_determinism, seed).
    A bfloat16/float16 model or operator is refused (ValueError) before any product."""
    check_curvature_dtype(A)  # half precision is refused before any product (lanczos.py, "Precision")
    if isinstance(A, nn.Module):
        if loss is None or X is None:
            raise TypeError("a model needs a loss and data: f(model, loss, X, y, *, ...)")
        return HessianOperator(A, loss, X, y, **options)
    if loss is not None or X is not None or y is not None:
        raise TypeError(
            f"loss, X and y go with a model; got {type(A).__name__} as A (for an operator or a matrix, "
            "pass the options by keyword: num_matvecs=..., num_probes=...)"
        )
    return A


def _operator_setup(A, seed: int) -> tuple[int, torch.dtype, torch.device, torch.Generator]:
    dim = operator_dim(A)
    dtype = getattr(A, "dtype", torch.float64)
    device = torch.device(getattr(A, "device", "cpu"))
    return dim, dtype, device, torch.Generator(device=device).manual_seed(seed)


def _rademacher(shape, gen, dtype, device) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=device).to(dtype) * 2 - 1


def _apply(A, v: Tensor) -> Tensor:
    return (A @ v).to(dtype=v.dtype, device=v.device)


def _apply_block(A, V: Tensor) -> Tensor:
    """A V for V ``(D, m)``: one call for tensors and HessianOperator (vmapped), else column by column."""
    if isinstance(A, (Tensor, HessianOperator)):
        return _apply(A, V)
    return torch.stack([_apply(A, V[:, j]) for j in range(V.shape[1])], dim=1)


def _mean_stderr(samples: np.ndarray) -> tuple[float, float]:
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size < 2:
        return float(samples.mean()), float("nan")
    return float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(samples.size))


Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate with a standard error that holds at small budgets, and its 95% interval.

    Both estimators end with n Rademacher quadratic forms x_i = g_iᵀ B g_i of one symmetric matrix B
    (Hutchinson: B = A; Hutch++: the deflated B = (I − QQᵀ)A(I − QQᵀ), the rest being exact), and
    report value = c + mean_i x_i. For Rademacher g, Var(gᵀBg) = 2 Σ_{i≠j} B_ij² ≤ 2‖B‖_F², and
    E‖Bg‖² = tr(B²) = ‖B‖_F²; ‖B g_i‖ comes free with the product. So

        stderr = √(2 · mean_i ‖B g_i‖² / n)

    is an unbiased estimate of an upper bound on the standard deviation of the estimate — from sums
    of squares (no cancellation), hence far steadier at small n than the sample standard deviation
    of the x_i (n − 1 degrees of freedom, heavy tails). Conservative where B's diagonal carries much
    of ‖B‖_F (a near-multiple of I: up to 4× wide), never too small on average. (The sample standard
    error it replaces covered the truth in 83–87% of seeds at 12 products for decaying spectra, and
    the t-quantile on it in 85–95%; ``tests/diagnostics/test_trace_statistics.py``.)

    Fields:
        value: the estimate of tr(A).
        stderr: the standard error above (0 where B = 0: Hutch++ with s ≥ D, exact).
        num_matvecs: products used.
        method: ``"hutchinson"`` or ``"hutch++"``.
        interval: (value − 1.96·stderr, value + 1.96·stderr), nominal 95%: over 400 seeds it covered
            the true trace in ≥ 93% at 12, 30 and 99 products for four spectra (power laws,
            exponential, flat; D = 100).
        num_probes: n, the quadratic forms behind ``stderr``.
        sample_stderr: the classical std(x_i, ddof=1)/√n (NaN if n < 2), too small at small n: for
            comparison only.
    """

    value: float
    stderr: float
    num_matvecs: int
    method: str
    interval: tuple[float, float] = (float("nan"), float("nan"))
    num_probes: int = 0
    sample_stderr: float = float("nan")


def quadratic_form_estimate(exact: float, forms, image_norms_sq, num_matvecs: int, method: str) -> TraceEstimate:
    """exact + mean(forms) with the standard error √(2·mean(image_norms_sq)/n) of :class:`TraceEstimate`.

    ``forms``: the n quadratic forms g_iᵀBg_i; ``image_norms_sq``: ‖B g_i‖² for the same probes.
    """
    forms = np.asarray(forms, dtype=np.float64)
    norms = np.asarray(image_norms_sq, dtype=np.float64)
    n = forms.size
    mean, sample_stderr = _mean_stderr(forms)
    stderr = float(np.sqrt(2.0 * norms.mean() / n))
    value = exact + mean
    return TraceEstimate(value, stderr, num_matvecs, method, interval=(value - Z95 * stderr, value + Z95 * stderr),
                         num_probes=n, sample_stderr=sample_stderr)


def hutchinson_trace(
    A,
    loss: LossSpec | None = None,
    X=None,
    y=None,
    *,
    num_matvecs: int,
    seed: int = 0,
    chunk_size: int | None = None,
    reduction: str | None = None,
    reuse: str = "graph",
    check_determinism: bool = True,
    params=None,
    penalty=None,
    mode: str = "eval",
    batch=None,
    distributed=None,
) -> TraceEstimate:
    """tr(A) ≈ mean_i v_iᵀ A v_i over ``num_matvecs`` Rademacher probes v_i ``(D,)`` (Hutchinson 1990).

    Args:
        A: an operator (``A.shape == (D, D)``, ``A @ v``; a HessianOperator or a dense tensor), or
            a model (``nn.Module``): then the Hessian of its data-set loss, a
            :class:`~implicitlab.diagnostics.hessian.HessianOperator` built from ``loss``, ``X``,
            ``y``, ``chunk_size``, ``reduction``, ``reuse``, ``check_determinism``, ``seed``,
            ``params`` (parameter filter), ``penalty``, ``mode`` (``"eval"`` by default),
            ``batch`` and ``distributed`` (each rank its shard; the probes come from the same seeded
            generator on every rank, so every rank gets the same estimate bit for bit) (its
            determinism probe's two products are not counted in ``num_matvecs``).
        loss, X, y: with a model only — the loss name or callable ``(outputs, targets)``, the data.
        num_matvecs: products (= probes), ≥ 1.
        seed: seed of the probes (a generator of their own on A's device).

    Returns a :class:`TraceEstimate`: ``stderr`` = √(2·mean‖A v_i‖²/m), an upper estimate of the
    standard deviation (Var(vᵀAv) ≤ 2‖A‖_F² for Rademacher v), and its 95% ``interval``.

    Example::

        est = hutchinson_trace(model, "ce", X, y, num_matvecs=100)   # est.value ± est.stderr
    """
    if num_matvecs < 1:
        raise ValueError(f"num_matvecs must be ≥ 1, got {num_matvecs}")
    A = _as_operator(A, loss, X, y, chunk_size=chunk_size, reduction=reduction, reuse=reuse,
                     check_determinism=check_determinism, seed=seed, params=params, penalty=penalty,
                     mode=mode, batch=batch, distributed=distributed)
    dim, dtype, device, gen = _operator_setup(A, seed)
    forms, norms = [], []
    for _ in range(num_matvecs):
        v = _rademacher((dim,), gen, dtype, device)
        Av = _apply(A, v)
        forms.append(float(v @ Av))
        norms.append(float(Av @ Av))  # ‖Av‖²: E = ‖A‖_F², the variance bound of TraceEstimate
    return quadratic_form_estimate(0.0, forms, norms, num_matvecs, "hutchinson")


def hutchpp_trace(
    A,
    loss: LossSpec | None = None,
    X=None,
    y=None,
    *,
    num_matvecs: int,
    seed: int = 0,
    chunk_size: int | None = None,
    reduction: str | None = None,
    reuse: str = "graph",
    check_determinism: bool = True,
    params=None,
    penalty=None,
    mode: str = "eval",
    batch=None,
    distributed=None,
) -> TraceEstimate:
    """Hutch++: tr(A) = tr(QᵀAQ) + Hutchinson on (I − QQᵀ)A(I − QQᵀ), Q = orth(A S).

    Budget split (Meyer et al. 2021, Alg. 1): s = ⌊m/3⌋ sketch probes S, s products A Q, the
    remaining m − 2s Rademacher probes for the deflated part. Given Q the estimate is unbiased
    (tr(A) = tr(QᵀAQ) + tr((I − QQᵀ)A(I − QQᵀ)) exactly, for any Q), so its error is that of the
    deflated Hutchinson part alone, whatever s and the rank of A: ``stderr`` and ``interval`` are
    those of that part (:class:`TraceEstimate`), valid conditionally on the sketch and hence
    unconditionally; no term for the sketch is needed. Needs m = ``num_matvecs`` ≥ 3; with
    s ≥ D (m ≥ 3D) Q spans everything and the estimate is exact. ``A`` an operator or a model,
    and the other arguments, as in :func:`hutchinson_trace`.
    """
    if num_matvecs < 3:
        raise ValueError(f"Hutch++ needs num_matvecs ≥ 3, got {num_matvecs}")
    A = _as_operator(A, loss, X, y, chunk_size=chunk_size, reduction=reduction, reuse=reuse,
                     check_determinism=check_determinism, seed=seed, params=params, penalty=penalty,
                     mode=mode, batch=batch, distributed=distributed)
    dim, dtype, device, gen = _operator_setup(A, seed)
    s = num_matvecs // 3
    S = _rademacher((dim, s), gen, dtype, device)
    Q, _ = torch.linalg.qr(_apply_block(A, S))  # (D, s): orthonormal basis of range(A S)
    AQ = _apply_block(A, Q)
    exact_part = float(torch.einsum("ij,ij->", Q, AQ))
    forms, norms = [], []
    for _ in range(num_matvecs - 2 * s):
        g = _rademacher((dim,), gen, dtype, device)
        g = g - Q @ (Q.T @ g)
        Ag = _apply(A, g)
        Bg = Ag - Q @ (Q.T @ Ag)  # B g' for the Rademacher g' behind g: B = (I − QQᵀ)A(I − QQᵀ)
        forms.append(float(g @ Bg))
        norms.append(float(Bg @ Bg))
    return quadratic_form_estimate(exact_part, forms, norms, num_matvecs, "hutch++")


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ quadrature: per probe p, nodes θ_{p,i} and weights w_{p,i} (Σ_i w_{p,i} = 1).

    Shapes: ``nodes``, ``weights`` ``(P, m)`` float64 (m = Lanczos steps; rows of a probe whose
    Krylov space was exhausted early are padded with weight 0). ``dim`` = D.
    """

    nodes: Tensor
    weights: Tensor
    dim: int
    num_matvecs: int

    def _per_probe(self, f) -> np.ndarray:
        return (self.weights * f(self.nodes)).sum(1).numpy()

    def moment(self, p: int) -> tuple[float, float]:
        """(estimate, stderr) of the p-th moment ∫ t^p φ(t) dt = tr(A^p)/D."""
        return _mean_stderr(self._per_probe(lambda t: t**p))

    def trace(self, f=lambda t: t) -> tuple[float, float]:
        """(estimate, stderr) of tr f(A) = D ∫ f φ; f acts elementwise on a float64 tensor."""
        mean, err = _mean_stderr(self._per_probe(f))
        return self.dim * mean, self.dim * err

    def density(self, grid: Tensor, sigma: float) -> Tensor:
        """φ smoothed by a Gaussian of width ``sigma`` on ``grid`` ``(G,)`` → ``(G,)`` (integrates to 1)."""
        grid = torch.as_tensor(grid, dtype=torch.float64).reshape(-1, 1, 1)
        kernel = torch.exp(-0.5 * ((grid - self.nodes) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        return (kernel * self.weights).sum(-1).mean(-1)


def slq_spectral_density(
    A,
    loss: LossSpec | None = None,
    X=None,
    y=None,
    *,
    num_probes: int = 10,
    num_steps: int = 30,
    seed: int = 0,
    chunk_size: int | None = None,
    reduction: str | None = None,
    reuse: str = "graph",
    check_determinism: bool = True,
    params=None,
    penalty=None,
    mode: str = "eval",
    batch=None,
    distributed=None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature with ``num_probes`` Rademacher probes of ``num_steps`` each.

    Lanczos uses full reorthogonalization (the Gauss nodes of a short run are then reliable);
    a run stops early when its Krylov space is exhausted (the quadrature is then exact).
    Costs num_probes × min(num_steps, D) products. ``A`` an operator or a model, and ``loss``,
    ``X``, ``y``, ``seed`` and the operator's options, as in :func:`hutchinson_trace`.
    """
    if num_probes < 1 or num_steps < 1:
        raise ValueError("num_probes and num_steps must be ≥ 1")
    A = _as_operator(A, loss, X, y, chunk_size=chunk_size, reduction=reduction, reuse=reuse,
                     check_determinism=check_determinism, seed=seed, params=params, penalty=penalty,
                     mode=mode, batch=batch, distributed=distributed)
    dim, dtype, device, gen = _operator_setup(A, seed)
    m = min(num_steps, dim)
    nodes = torch.zeros(num_probes, m, dtype=torch.float64)
    weights = torch.zeros(num_probes, m, dtype=torch.float64)
    total = 0
    for p in range(num_probes):
        lz = Lanczos(A, capacity=m, generator=gen)  # one run: R = 1
        lz.start(_rademacher((1, dim), gen, dtype, device))
        while lz.size < m:
            lz.step()
            if not lz.finite[0]:
                raise ValueError("the operator returned a non-finite product")
            if lz.broken[0] or lz.exhausted[0]:
                break
        theta, S = lz.ritz(0)
        nodes[p, : theta.size] = torch.as_tensor(theta)
        weights[p, : theta.size] = torch.as_tensor(S[0, :] ** 2)
        total += lz.num_matvecs
    return SpectralDensity(nodes, weights, dim, total)
