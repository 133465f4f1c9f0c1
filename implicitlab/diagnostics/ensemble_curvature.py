"""Sharpness of every run of an ensemble at once: batched Hessian–vector products and probes.

The runs of an :class:`~implicitlab.models.Ensemble` share no parameter, so the Hessian of
Σ_r L_r is block diagonal with the runs' Hessians H_r as blocks. One double-backward pass with a
batched vector V ``(R, D)`` therefore returns every H_r v_r at the cost of about one product of a
single run (the tensors are batched): :class:`EnsembleHessian` is that batch of R operators, and
the package's Lanczos (:func:`~implicitlab.diagnostics.lanczos.lanczos_eigenpairs`) runs R
recurrences in lockstep on it, each with its own basis, tridiagonal, stopping and restarts.
:func:`ensemble_sharpness` returns the same :class:`~implicitlab.diagnostics.lanczos.EigenResult`
as :func:`~implicitlab.diagnostics.eigen.sharpness` for one model, with a leading run dimension;
a run whose weights or products are not finite gets NaN and ``converged=False``.

Along training sharpness moves slowly: :class:`SharpnessProbe` warm-starts every run from the
extrapolation of its previous two top eigenvectors (:class:`~implicitlab.diagnostics.lanczos.WarmStart`,
the design of :class:`~implicitlab.diagnostics.tracking.SharpnessTracker`), so an estimate
typically needs a few products.

Square loss on linear networks uses the same sufficient statistics as training (Σ = XᵀX/n, b = XᵀY/n),
so a product costs O(L d³) whatever n is.

Every other chain (an elementwise activation between layers, or a linear chain with another loss)
gets its products written out, forward over reverse, for all runs at once (:class:`_ChainProducts`):
the forward pass (pre-activations Z_k, σ′(Z_k), σ″(Z_k)), the backward pass (Δ_k = ∂L/∂Z_k) and the
loss's per-example Hessian in the outputs are computed once per point and kept, so a product is
one tangent forward pass and one tangent backward pass (about six batched matrix products per
layer), with no graph. With V_k the direction of layer k, Ż_1 = V_1 Xᵀ, Ȧ_k = σ′(Z_k) ⊙ Ż_k,
Ż_{k+1} = V_{k+1} A_k + W_{k+1} Ȧ_k, Ḟ = [head] Ż_L, and

    Δ̇_L = [headᵀ] (∇²_F ℓ · Ḟ),   (H v)_k = Δ̇_k A_{k−1}ᵀ + Δ_k Ȧ_{k−1}ᵀ,
    Δ̇_{k−1} = σ′(Z_{k−1}) ⊙ (V_kᵀ Δ_k + W_kᵀ Δ̇_k) + σ″(Z_{k−1}) ⊙ Ż_{k−1} ⊙ (W_kᵀ Δ_k)

(the derivative of Δ_{k−1} = σ′(Z_{k−1}) ⊙ W_kᵀ Δ_k along the direction). The loss's Hessian in the
outputs is block diagonal over examples (every loss is a sum over examples): one autograd pass on
the outputs only per output coordinate gives its C × C blocks. The cache is keyed by the weights'
version counters, so a product after an in-place update recomputes it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..losses import SquareLossStats
from ..losses import loss as loss_fn
from ..models import Ensemble
from ..models.architecture import activate_with_derivatives
from .lanczos import EigenResult, WarmStart, lanczos_eigenpairs


class _ChainProducts:
    """Forward-over-reverse Hessian–vector products of a chain, written out and batched over runs.

    Built at fixed weights (see the module docstring for the recurrences); ``__call__`` maps the
    per-layer directions ``[(R, out_k, in_k)]`` to the per-layer products.
    """

    @torch.no_grad()
    def __init__(self, model: Ensemble, loss: str, X: Tensor, y: Tensor, reduction: str):
        self.weights = [W.detach() for W in model.weights]
        self.head = model.head
        act, eps = model.arch.activation, model.arch.eps
        L = len(self.weights)
        h = X.T  # (d, n)
        self.inputs: list[Tensor] = [h]  # A_{k−1}: Xᵀ, then σ(Z_k) (R, out_k, n)
        self.d1: list[Tensor | None] = []  # σ′(Z_k) of the hidden layers
        self.d2: list[Tensor | None] = []  # σ″(Z_k)
        for k, W in enumerate(self.weights):
            z = torch.matmul(W, h)  # (R, out_k, n)
            if k == L - 1:
                break
            a, d1, d2 = activate_with_derivatives(z, act, eps, order=2)
            self.inputs.append(a)
            self.d1.append(d1)
            self.d2.append(d2)
            h = a
        FT = z if self.head is None else torch.matmul(self.head, z)  # (R, C, n)
        F = FT.transpose(-1, -2).detach().requires_grad_(True)  # (R, n, C)
        C = F.shape[-1]
        with torch.enable_grad():
            (g,) = torch.autograd.grad(loss_fn(loss, F, y, reduction).sum(), F, create_graph=True)
            rows = []
            for c in range(C):  # row c of every example's C × C block: the loss is a sum over examples
                (row,) = torch.autograd.grad(g[..., c].sum(), F, retain_graph=c < C - 1, allow_unused=True)
                rows.append(torch.zeros_like(F) if row is None else row)
        self.loss_hessian = torch.stack(rows, dim=-2).detach()  # (R, n, C, C)
        delta = g.detach().transpose(-1, -2)  # (R, C, n)
        if self.head is not None:
            delta = torch.matmul(self.head.transpose(-1, -2), delta)
        self.deltas: list[Tensor] = [None] * L  # type: ignore[list-item]  # Δ_k = ∂L/∂Z_k
        self.back: list[Tensor | None] = [None] * L  # W_kᵀ Δ_k, before σ′
        for k in range(L - 1, -1, -1):
            self.deltas[k] = delta
            if k > 0:
                b = torch.matmul(self.weights[k].transpose(-1, -2), delta)
                self.back[k] = b
                delta = b if self.d1[k - 1] is None else b * self.d1[k - 1]

    @torch.no_grad()
    def __call__(self, V: list[Tensor]) -> list[Tensor]:
        ws, L = self.weights, len(self.weights)
        zdot = torch.matmul(V[0], self.inputs[0])  # (R, out_1, n)
        adots: list[Tensor | None] = [None]
        zdots = [zdot]
        for k in range(1, L):
            d1 = self.d1[k - 1]
            adot = zdot if d1 is None else zdot * d1  # Ȧ_k
            adots.append(adot)
            zdot = torch.matmul(V[k], self.inputs[k]).add_(torch.matmul(ws[k], adot))
            zdots.append(zdot)
        fdot = zdot if self.head is None else torch.matmul(self.head, zdot)  # (R, C, n)
        Hf = self.loss_hessian  # (R, n, C, C)
        gdot = (Hf @ fdot.transpose(-1, -2).unsqueeze(-1)).squeeze(-1)  # (R, n, C)
        ddot = gdot.transpose(-1, -2)  # (R, C, n)
        if self.head is not None:
            ddot = torch.matmul(self.head.transpose(-1, -2), ddot)
        out: list[Tensor] = [None] * L  # type: ignore[list-item]
        for k in range(L - 1, -1, -1):
            hv = torch.matmul(ddot, self.inputs[k].transpose(-1, -2))
            if k > 0:
                hv.add_(torch.matmul(self.deltas[k], adots[k].transpose(-1, -2)))
            out[k] = hv
            if k > 0:
                nxt = torch.matmul(V[k].transpose(-1, -2), self.deltas[k]).add_(
                    torch.matmul(ws[k].transpose(-1, -2), ddot))
                d1, d2 = self.d1[k - 1], self.d2[k - 1]
                ddot = nxt if d1 is None else nxt.mul_(d1).addcmul_(d2 * zdots[k - 1], self.back[k])
        return out


class EnsembleHessian:
    """Batched Hessian–vector products of every run's loss: ``H @ V`` with V ``(R, D)``.

    Args:
        model: the ensemble (parameters ``(R, out, in)`` per layer).
        loss: ``"square" | "exp" | "logistic" | "ce"`` (see :mod:`implicitlab.losses`).
        X, y: the full data set (``(n, d)``, ``(n,)``/``(n, C)``); reduction as in training.

    ``shape`` is ``(R, D, D)``: a batch of R operators for
    :func:`~implicitlab.diagnostics.lanczos.lanczos_eigenpairs`.
    """

    def __init__(self, model: Ensemble, loss: str, X: Tensor, y: Tensor, *, reduction: str = "mean"):
        if X.shape[0] == 0:
            raise ValueError("the data set is empty")
        self.model = model
        self.loss = loss
        self.X, self.y, self.reduction = X, y, reduction
        self.params = list(model.weights)
        self.shapes = [p.shape[1:] for p in self.params]
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        self.R = model.num_runs
        self.D = sum(self.sizes)
        self.shape = (self.R, self.D, self.D)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        linear = model.arch.activation == "none"
        self._stats = SquareLossStats(X, y, reduction) if (loss == "square" and linear) else None
        # written-out products for every chain but the linear square loss (and a subclass's own forward)
        self._written_out = self._stats is None and type(model).forward is Ensemble.forward
        self.method = "statistics" if self._stats is not None else ("written-out" if self._written_out else "autograd")
        """How a product is computed: ``"statistics"`` (linear, square loss), ``"written-out"``, ``"autograd"``."""
        self._chain: _ChainProducts | None = None
        self._chain_key: tuple | None = None
        self.num_matvecs = 0

    def losses(self) -> Tensor:
        if self._stats is not None:
            return self._stats.loss(self.model.end_to_end())
        return loss_fn(self.loss, self.model(self.X), self.y, self.reduction)

    def flat_gradient(self) -> Tensor:
        """Per-run gradients ``(R, D)``."""
        with torch.enable_grad():
            grads = torch.autograd.grad(self.losses().sum(), self.params)
        return torch.cat([g.reshape(self.R, -1) for g in grads], dim=1)

    def __matmul__(self, V: Tensor) -> Tensor:
        """``(R, D)`` → ``(R, D)``: row r is H_r v_r."""
        parts = torch.split(V, self.sizes, dim=1)
        if self._written_out:
            key = tuple((p._version, p.data_ptr()) for p in self.params)
            if self._chain is None or key != self._chain_key:
                self._chain = _ChainProducts(self.model, self.loss, self.X, self.y, self.reduction)
                self._chain_key = key
            hv = self._chain([p.reshape(self.R, *s) for p, s in zip(parts, self.shapes)])
            self.num_matvecs += 1
            return torch.cat([h.reshape(self.R, -1) for h in hv], dim=1)
        with torch.enable_grad():
            grads = torch.autograd.grad(self.losses().sum(), self.params, create_graph=True)
            outs = [p.reshape(self.R, *s) for p, s in zip(parts, self.shapes)]
            hv = torch.autograd.grad(grads, self.params, grad_outputs=outs)
        self.num_matvecs += 1
        return torch.cat([h.reshape(self.R, -1) for h in hv], dim=1).detach()


def ensemble_sharpness(
    model: Ensemble,
    loss: str,
    X: Tensor,
    y: Tensor,
    *,
    k: int = 1,
    tol: float = 1e-6,
    which: str = "LA",
    v0: Tensor | None = None,
    max_matvecs: int | None = None,
    criterion: str = "residual",
    reduction: str = "mean",
    explicit_residuals: bool = True,
    chunk_runs: int = 128,
    seed: int = 0,
) -> EigenResult:
    """Sharpness (top-k Hessian eigenvalues) of every run of ``model``, with residuals.

    The options are those of :func:`~implicitlab.diagnostics.eigen.sharpness` (see
    :func:`~implicitlab.diagnostics.lanczos.lanczos_eigenpairs`); ``v0`` is ``(R, D)`` or
    ``(R, D, m)``. The residuals are recomputed explicitly by default (one more batched product per
    eigenvalue). Fields: ``values`` ``(R, k)``, ``vectors`` ``(R, D, k)``, ``residuals``,
    ``error_bounds``, ``converged``, ``lanczos_residuals`` ``(R, k)``, ``run_matvecs`` ``(R,)``;
    ``num_matvecs`` counts batched products over all chunks.

    Runs are processed ``chunk_runs`` at a time: the Lanczos basis of a chunk holds up to
    chunk_runs × (max_matvecs + 1) × D numbers, and a chunk iterates until its slowest run stops.
    """
    if chunk_runs < 1:
        raise ValueError(f"chunk_runs must be ≥ 1, got {chunk_runs}")
    R = model.num_runs
    parts = []
    for start in range(0, R, chunk_runs):
        sl = slice(start, min(start + chunk_runs, R))
        sub = model if (start == 0 and sl.stop == R) else Ensemble(
            model.arch, [w.detach()[sl] for w in model.weights], None if model.head is None else model.head[sl])
        parts.append(lanczos_eigenpairs(
            EnsembleHessian(sub, loss, X, y, reduction=reduction), k=k, which=which, tol=tol,
            v0=None if v0 is None else v0[sl], max_matvecs=max_matvecs, criterion=criterion,
            explicit_residuals=explicit_residuals, seed=seed,
        ))
    return parts[0] if len(parts) == 1 else concat_runs(parts)


def concat_runs(parts: list[EigenResult]) -> EigenResult:
    """Batched results of consecutive chunks of runs as one (``num_matvecs`` summed)."""
    first = parts[0]
    return EigenResult(
        values=torch.cat([p.values for p in parts]), vectors=torch.cat([p.vectors for p in parts]),
        residuals=torch.cat([p.residuals for p in parts]), error_bounds=torch.cat([p.error_bounds for p in parts]),
        converged=torch.cat([p.converged for p in parts]),
        lanczos_residuals=torch.cat([p.lanczos_residuals for p in parts]),
        num_matvecs=sum(p.num_matvecs for p in parts), run_matvecs=torch.cat([p.run_matvecs for p in parts]),
        which=first.which, tol=first.tol, criterion=first.criterion, method=first.method,
        residual_kind=first.residual_kind,
    )


class SharpnessProbe:
    """A training probe measuring every run's sharpness, warm-started from the previous vectors.

    Adds columns ``sharpness``, ``sharpness_residual`` (explicit ‖Hv − λv‖), ``sharpness_converged``
    and ``sharpness_matvecs`` (products this run used, the explicit residual's included). The default
    stopping rule is the eigenvalue error estimate min(r, r²/δ̂) ≤ tol·|θ| (``criterion="gap"``); the
    explicit residual r is recorded for every estimate, so |λ − θ| ≤ r is certified whatever the
    rule. Each estimate starts from :class:`~implicitlab.diagnostics.lanczos.WarmStart` (the
    extrapolation of the run's last two top eigenvectors with ``extrapolate=True``, as
    :class:`~implicitlab.diagnostics.tracking.SharpnessTracker`). Pass it in ``probes=`` of
    :func:`implicitlab.train.gradient_descent`; its schedule is the training's ``probe_steps``.
    """

    def __init__(self, tol: float = 1e-6, max_matvecs: int | None = None, criterion: str = "gap", *,
                 extrapolate: bool = True):
        self.tol, self.max_matvecs, self.criterion = tol, max_matvecs, criterion
        self.warm = WarmStart(extrapolate)
        self.total_run_matvecs = 0
        self.estimates = 0

    def estimate(self, H: EnsembleHessian, warm: WarmStart) -> EigenResult:
        """The top eigenpair of every run of ``H``, started from ``warm`` (updated)."""
        res = lanczos_eigenpairs(H, k=1, tol=self.tol, v0=warm.vector(), max_matvecs=self.max_matvecs,
                                 criterion=self.criterion, explicit_residuals=True)
        warm.update(res.vectors)
        return res

    def __call__(self, ctx) -> dict[str, Tensor]:
        H = EnsembleHessian(ctx.model, ctx.loss, ctx.X, ctx.y, reduction=ctx.reduction)
        res = self.estimate(H, self.warm)
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
    Adds ``sharpness_mid`` (and its residual) to the columns of :class:`SharpnessProbe`; the
    midpoints have their own warm start.
    """

    def __init__(self, tol: float = 1e-6, max_matvecs: int | None = None, criterion: str = "gap", *,
                 extrapolate: bool = True):
        super().__init__(tol, max_matvecs, criterion, extrapolate=extrapolate)
        self.warm_mid = WarmStart(extrapolate)

    def __call__(self, ctx) -> dict[str, Tensor]:
        row = super().__call__(ctx)
        if ctx.lr is None:
            raise ValueError("MidpointSharpnessProbe needs the runs' step sizes in the probe context")
        H = EnsembleHessian(ctx.model, ctx.loss, ctx.X, ctx.y, reduction=ctx.reduction)
        grads = torch.split(H.flat_gradient(), H.sizes, dim=1)
        half = (ctx.lr / 2).to(H.dtype)
        weights = [(W.detach() - half.view(-1, 1, 1) * g.reshape(W.shape)) for W, g in zip(H.params, grads)]
        mid = Ensemble(ctx.model.arch, weights, ctx.model.head)
        res = self.estimate(EnsembleHessian(mid, ctx.loss, ctx.X, ctx.y, reduction=ctx.reduction), self.warm_mid)
        row["sharpness_mid"] = res.values[:, 0]
        row["sharpness_mid_residual"] = res.residuals[:, 0]
        return row
