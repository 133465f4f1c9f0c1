"""Sharpness of every run of an ensemble at once: batched Hessian–vector products and Lanczos.

The runs of an :class:`~implicitlab.models.Ensemble` share no parameter, so the Hessian of
Σ_r L_r is block diagonal with the runs' Hessians H_r as blocks. One double-backward pass with a
batched vector V ``(R, D)`` therefore returns every H_r v_r at the cost of about one product of a
single run (the tensors are batched), and R Lanczos recurrences run in lockstep on it:

    H_r Q_r = Q_r T_r + β_r q_r eᵀ   for every run r,

with full reorthogonalization per run (batched Gram–Schmidt, twice), each run's tridiagonal T_r
diagonalised with a batched ``eigh``, and the Lanczos residual ‖H_r v − θ v‖ = β_r|s_last| (Parlett
1998, §13.1) as each run's certificate. A run stops contributing when its wanted Ritz values pass
r ≤ tol·|θ|; the batch stops when every run has (or at ``max_matvecs``). At the end the residuals
are recomputed explicitly with one more batched product per eigenvalue.

Along training sharpness moves slowly: :class:`SharpnessProbe` warm-starts every run from its
previous top eigenvector, so an estimate typically needs a few products.

Square loss on linear networks uses the same sufficient statistics as training (Σ = XᵀX/n, b = XᵀY/n),
so a product costs O(L d³) whatever n is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..losses import SquareLossStats
from ..losses import loss as loss_fn
from ..models import Ensemble

WHICH = ("LA", "SA", "LM")


@dataclass(frozen=True)
class EnsembleEigenResult:
    """Per-run eigenpairs.

    Fields (R runs, k eigenpairs, D parameters per run):
        values: ``(R, k)`` float64 (NaN for a run whose weights are not finite).
        vectors: ``(R, k, D)`` unit eigenvector estimates.
        residuals: ``(R, k)`` explicit ‖H_r v − λ v‖ (one extra batched product per eigenvalue).
        lanczos_residuals: ``(R, k)`` β|s_last| at the iteration the run stopped.
        converged: ``(R, k)`` bool.
        num_matvecs: batched products used (each gives one product to every run).
        run_matvecs: ``(R,)`` products each run needed until it converged.
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    lanczos_residuals: Tensor
    converged: Tensor
    num_matvecs: int
    run_matvecs: Tensor


class EnsembleHessian:
    """Batched Hessian–vector products of every run's loss: ``H @ V`` with V ``(R, D)``.

    Args:
        model: the ensemble (parameters ``(R, out, in)`` per layer).
        loss_name: ``"square" | "exp" | "logistic" | "ce"`` (see :mod:`implicitlab.losses`).
        X, y: the full data set (``(n, d)``, ``(n,)``/``(n, C)``); reduction as in training.
    """

    def __init__(self, model: Ensemble, loss_name: str, X: Tensor, y: Tensor, reduction: str = "mean"):
        if X.shape[0] == 0:
            raise ValueError("the data set is empty")
        self.model = model
        self.loss_name = loss_name
        self.X, self.y, self.reduction = X, y, reduction
        self.params = list(model.weights)
        self.shapes = [p.shape[1:] for p in self.params]
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        self.R = model.num_runs
        self.D = sum(self.sizes)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        linear = model.arch.activation == "none"
        self._stats = SquareLossStats(X, y, reduction) if (loss_name == "square" and linear) else None
        self.num_matvecs = 0

    def losses(self) -> Tensor:
        if self._stats is not None:
            return self._stats.loss(self.model.end_to_end())
        return loss_fn(self.loss_name, self.model(self.X), self.y, self.reduction)

    def flat_gradient(self) -> Tensor:
        """Per-run gradients ``(R, D)``."""
        with torch.enable_grad():
            grads = torch.autograd.grad(self.losses().sum(), self.params)
        return torch.cat([g.reshape(self.R, -1) for g in grads], dim=1)

    def __matmul__(self, V: Tensor) -> Tensor:
        """``(R, D)`` → ``(R, D)``: row r is H_r v_r."""
        with torch.enable_grad():
            grads = torch.autograd.grad(self.losses().sum(), self.params, create_graph=True)
            parts = torch.split(V, self.sizes, dim=1)
            outs = [p.reshape(self.R, *s) for p, s in zip(parts, self.shapes)]
            hv = torch.autograd.grad(grads, self.params, grad_outputs=outs)
        self.num_matvecs += 1
        return torch.cat([h.reshape(self.R, -1) for h in hv], dim=1).detach()


def _select(theta: Tensor, k: int, which: str) -> Tensor:
    """Indices ``(R, k)`` of the wanted Ritz values in each row of ``theta`` ``(R, m)``."""
    if which == "LA":
        return theta.argsort(dim=1, descending=True)[:, :k]
    if which == "SA":
        return theta.argsort(dim=1)[:, :k]
    return theta.abs().argsort(dim=1, descending=True)[:, :k]


def ensemble_lanczos(
    H: EnsembleHessian,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float = 1e-6,
    v0: Tensor | None = None,
    max_matvecs: int = 100,
    criterion: str = "residual",
    seed: int = 0,
) -> EnsembleEigenResult:
    """Top-k eigenpairs of every run's Hessian by Lanczos in lockstep (see module docstring).

    Args:
        H: the batched operator.
        k: eigenpairs per run (1 ≤ k ≤ D).
        which: ``"LA"`` (largest algebraic: sharpness), ``"SA"``, ``"LM"``.
        tol: relative accuracy: a run's Ritz pair has converged when its residual ≤ tol·|θ|.
        v0: ``(R, D)`` warm start (e.g. the previous top eigenvectors); random when None.
        max_matvecs: at most this many batched products in the recurrence.
        criterion: ``"residual"`` (certified: stop when r ≤ tol·|θ|, and |λ − θ| ≤ r for some
            eigenvalue λ) or ``"gap"`` (stop when min(r, r²/δ̂) ≤ tol·|θ|, δ̂ the distance to the
            nearest other Ritz value less its residual: the eigenvalue error bound of Parlett
            Thm 11.7.1 with an estimated gap — fewer products, an estimate rather than a
            certificate, since the true gap can be smaller than δ̂ while its eigenvalue is unseen).
    """
    if criterion not in ("residual", "gap"):
        raise ValueError(f"criterion must be 'residual' or 'gap', got {criterion!r}")
    R, D = H.R, H.D
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if not 1 <= k <= D:
        raise ValueError(f"k must be in [1, {D}] (the parameter count per run), got {k}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    dtype, device = H.dtype, H.device
    finite = torch.stack([torch.isfinite(p.detach()).reshape(R, -1).all(1) for p in H.params]).all(0)
    m_max = min(max_matvecs, D)

    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(R, D, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    if v0 is not None:
        if v0.shape != (R, D):
            raise ValueError(f"v0 must be (R, D) = {(R, D)}, got {tuple(v0.shape)}")
        ok = torch.isfinite(v0).all(1) & (v0.norm(dim=1) > 0)
        q = torch.where(ok.unsqueeze(1), v0.to(device=device, dtype=dtype), q)
    q = torch.where(finite.unsqueeze(1), q, torch.zeros_like(q))
    q = q / q.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)

    Q = torch.zeros(R, m_max + 1, D, dtype=dtype, device=device)
    Q[:, 0] = q
    alpha = torch.zeros(R, m_max, dtype=torch.float64, device=device)
    beta = torch.zeros(R, m_max, dtype=torch.float64, device=device)
    active = finite.clone()  # runs still iterating
    done_at = torch.zeros(R, dtype=torch.long, device=device)
    best_theta = torch.full((R, k), float("nan"), dtype=torch.float64, device=device)
    best_s = torch.zeros(R, m_max, k, dtype=torch.float64, device=device)
    best_res = torch.full((R, k), float("inf"), dtype=torch.float64, device=device)
    best_m = torch.zeros(R, dtype=torch.long, device=device)
    converged = torch.zeros(R, k, dtype=torch.bool, device=device)
    used = 0
    for j in range(m_max):
        w = H @ Q[:, j]  # (R, D)
        used += 1
        blown = ~torch.isfinite(w).all(1)  # finite weights, but a product overflowed (a run about to diverge)
        if bool(blown.any()):
            finite &= ~blown
            active &= ~blown
        w = torch.where(active.unsqueeze(1), w, torch.zeros_like(w))
        a = (w * Q[:, j]).sum(1)
        alpha[:, j] = a.to(torch.float64)
        basis = Q[:, : j + 1]  # (R, j+1, D)
        for _ in range(2):  # full reorthogonalization, twice
            w = w - torch.einsum("rjd,rj->rd", basis, torch.einsum("rjd,rd->rj", basis, w))
        b = w.norm(dim=1)
        beta[:, j] = b.to(torch.float64)
        m = j + 1
        if m >= k:
            T = torch.diag_embed(alpha[:, :m]) + torch.diag_embed(beta[:, : m - 1], 1) + torch.diag_embed(
                beta[:, : m - 1], -1
            )
            theta, S = torch.linalg.eigh(T)  # (R, m), (R, m, m)
            idx = _select(theta, k, which)
            th = theta.gather(1, idx)
            s_last = S[:, m - 1, :].gather(1, idx)
            res = b.to(torch.float64).unsqueeze(1) * s_last.abs()
            err = res
            if criterion == "gap" and m > 1:
                s_all = b.to(torch.float64).unsqueeze(1) * S[:, m - 1, :].abs()  # residuals of all Ritz pairs
                dist = (th.unsqueeze(2) - theta.unsqueeze(1)).abs() - s_all.unsqueeze(1)  # (R, k, m)
                dist = dist.masked_fill(idx.unsqueeze(2) == torch.arange(m, device=device), float("inf"))
                gap = dist.amin(2).clamp_min(0)
                err = torch.minimum(res, res**2 / gap.clamp_min(torch.finfo(torch.float64).tiny))
            scale = torch.maximum(th.abs(), theta.abs().amax(1, keepdim=True) * torch.finfo(dtype).eps)
            exhausted = b <= 1e3 * torch.finfo(dtype).eps * theta.abs().amax(1).to(b.dtype).clamp_min(1e-300)
            conv = (err <= tol * scale) | exhausted.unsqueeze(1).to(torch.bool)
            run_done = conv.all(1) | (j == m_max - 1) | exhausted
            newly = active & run_done
            if bool(newly.any()):
                sel = newly
                best_theta[sel] = th[sel]
                best_res[sel] = res[sel]
                best_m[sel] = m
                converged[sel] = conv[sel]
                done_at[sel] = used
                Ssel = S.gather(2, idx.unsqueeze(1).expand(R, m, k))  # (R, m, k)
                best_s[sel, :m] = Ssel[sel]
                active &= ~run_done
        if not bool(active.any()):
            break
        q_next = w / b.clamp_min(torch.finfo(dtype).tiny).unsqueeze(1)
        Q[:, j + 1] = torch.where(active.unsqueeze(1), q_next, torch.zeros_like(q_next))

    # Ritz vectors v = Q s, per run with its own basis size
    M = int(best_m.max().item()) if bool(finite.any()) else 0
    vectors = torch.einsum("rmd,rmk->rkd", Q[:, :M].to(torch.float64), best_s[:, :M]).to(dtype)
    vectors = vectors / vectors.norm(dim=2, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    residuals = torch.empty(R, k, dtype=torch.float64, device=device)
    for i in range(k):
        v = torch.where(finite.unsqueeze(1), vectors[:, i], torch.zeros_like(vectors[:, i]))
        Hv = H @ v
        residuals[:, i] = (Hv - best_theta[:, i].to(dtype).unsqueeze(1) * v).norm(dim=1).to(torch.float64)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
    values = torch.where(finite.unsqueeze(1), best_theta, nan)
    residuals = torch.where(finite.unsqueeze(1), residuals, nan)
    converged = converged & finite.unsqueeze(1)
    return EnsembleEigenResult(
        values=values.cpu(), vectors=vectors, residuals=residuals.cpu(),
        lanczos_residuals=torch.where(finite.unsqueeze(1), best_res, nan).cpu(),
        converged=converged.cpu(), num_matvecs=used, run_matvecs=done_at.cpu(),
    )


def ensemble_sharpness(
    model: Ensemble,
    loss_name: str,
    X: Tensor,
    y: Tensor,
    *,
    k: int = 1,
    tol: float = 1e-6,
    which: str = "LA",
    reduction: str = "mean",
    v0: Tensor | None = None,
    max_matvecs: int = 100,
    criterion: str = "residual",
    chunk_runs: int = 128,
) -> EnsembleEigenResult:
    """Sharpness (top-k Hessian eigenvalues) of every run of ``model``; see :func:`ensemble_lanczos`.

    Runs are processed ``chunk_runs`` at a time: the Lanczos basis of a chunk holds
    chunk_runs × (max_matvecs + 1) × D numbers, and a chunk iterates until its slowest run converges.
    """
    if chunk_runs < 1:
        raise ValueError(f"chunk_runs must be ≥ 1, got {chunk_runs}")
    R = model.num_runs
    parts = []
    for start in range(0, R, chunk_runs):
        sl = slice(start, min(start + chunk_runs, R))
        sub = model if (start == 0 and sl.stop == R) else Ensemble(
            model.arch, [w.detach()[sl] for w in model.weights], None if model.head is None else model.head[sl])
        parts.append(ensemble_lanczos(EnsembleHessian(sub, loss_name, X, y, reduction), k, which=which, tol=tol,
                                      v0=None if v0 is None else v0[sl], max_matvecs=max_matvecs,
                                      criterion=criterion))
    if len(parts) == 1:
        return parts[0]
    return EnsembleEigenResult(
        values=torch.cat([p.values for p in parts]), vectors=torch.cat([p.vectors for p in parts]),
        residuals=torch.cat([p.residuals for p in parts]),
        lanczos_residuals=torch.cat([p.lanczos_residuals for p in parts]),
        converged=torch.cat([p.converged for p in parts]), num_matvecs=sum(p.num_matvecs for p in parts),
        run_matvecs=torch.cat([p.run_matvecs for p in parts]),
    )


class SharpnessProbe:
    """A training probe measuring every run's sharpness, warm-started from the previous vectors.

    Adds columns ``sharpness``, ``sharpness_residual`` (explicit ‖Hv − λv‖), ``sharpness_converged``
    and ``sharpness_matvecs`` (products this run needed). The default stopping rule is the eigenvalue
    error estimate min(r, r²/δ̂) ≤ tol·|θ| (``criterion="gap"``); the explicit residual r is recorded
    for every estimate, so |λ − θ| ≤ r is certified whatever the rule. Pass it in ``probes=`` of
    :func:`implicitlab.train.train`; its schedule is the training's ``probe_steps``.
    """

    def __init__(self, tol: float = 1e-6, max_matvecs: int = 100, criterion: str = "gap"):
        self.tol, self.max_matvecs, self.criterion = tol, max_matvecs, criterion
        self.previous: Tensor | None = None
        self.total_run_matvecs = 0
        self.estimates = 0

    def __call__(self, ctx) -> dict[str, Tensor]:
        H = EnsembleHessian(ctx.model, ctx.loss, ctx.X, ctx.y, ctx.reduction)
        res = ensemble_lanczos(H, 1, tol=self.tol, v0=self.previous, max_matvecs=self.max_matvecs,
                               criterion=self.criterion)
        self.previous = res.vectors[:, 0]
        self.total_run_matvecs += int(res.run_matvecs.sum())
        self.estimates += int(res.values.isfinite().sum())
        return {
            "sharpness": res.values[:, 0],
            "sharpness_residual": res.residuals[:, 0],
            "sharpness_converged": res.converged[:, 0].to(torch.float64),
            "sharpness_matvecs": res.run_matvecs.to(torch.float64),
        }


class MidpointSharpnessProbe(SharpnessProbe):
    """Sharpness at the midpoint θ − (η/2)∇L(θ) of each GD step, beside the sharpness at θ.

    At the edge of stability GD settles into a period-two orbit θ_a ↔ θ_b across the top
    eigendirection; the sharpness at the two iterates swings far above and below 2/η, while at the
    orbit's centre (θ_a + θ_b)/2 — which θ − (η/2)∇L(θ) is, exactly, for a two-cycle — it is what
    self-stabilisation pins near 2/η (Damian, Nichani & Lee, ICLR 2023; Cohen et al., ICLR 2021).
    Adds ``sharpness_mid`` (and its residual) to the columns of :class:`SharpnessProbe`.
    """

    def __init__(self, tol: float = 1e-6, max_matvecs: int = 100, criterion: str = "gap"):
        super().__init__(tol, max_matvecs, criterion)
        self.previous_mid: Tensor | None = None

    def __call__(self, ctx) -> dict[str, Tensor]:
        row = super().__call__(ctx)
        if ctx.lr is None:
            raise ValueError("MidpointSharpnessProbe needs the runs' step sizes in the probe context")
        H = EnsembleHessian(ctx.model, ctx.loss, ctx.X, ctx.y, ctx.reduction)
        grads = torch.split(H.flat_gradient(), H.sizes, dim=1)
        half = (ctx.lr / 2).to(H.dtype)
        weights = [(W.detach() - half.view(-1, 1, 1) * g.reshape(W.shape)) for W, g in zip(H.params, grads)]
        mid = Ensemble(ctx.model.arch, weights, ctx.model.head)
        res = ensemble_lanczos(EnsembleHessian(mid, ctx.loss, ctx.X, ctx.y, ctx.reduction), 1, tol=self.tol,
                               v0=self.previous_mid, max_matvecs=self.max_matvecs, criterion=self.criterion)
        self.previous_mid = res.vectors[:, 0]
        row["sharpness_mid"] = res.values[:, 0]
        row["sharpness_mid_residual"] = res.residuals[:, 0]
        return row
