"""Written-out gradients of chains with an elementwise activation, batched over runs.

A run of an :class:`~implicitlab.models.Ensemble` is f(x) = [head] W_L σ(W_{L−1} ⋯ σ(W_1 x)). With the
examples as columns (the layout used here: activations ``(R, width, n)``, n contiguous),

    Z_1 = W_1 Xᵀ,   A_k = σ(Z_k),   Z_{k+1} = W_{k+1} A_k,   Fᵀ = [head] Z_L,

and the chain rule, with Δ_k = ∂L/∂Z_k ``(R, out_k, n)``, gives the backward pass

    Δ_L = [headᵀ] (∂L/∂F)ᵀ,   ∂L/∂W_k = Δ_k A_{k−1}ᵀ  (A_0 = Xᵀ),   Δ_{k−1} = σ′(Z_{k−1}) ⊙ (W_kᵀ Δ_k).

Each hidden layer costs one fused elementwise kernel each way (PyTorch's own, vectorised, the ones
autograd calls): σ(Z_k) by ``aten.gelu`` / ``clamp`` / ``tanh``
(:func:`~implicitlab.models.architecture.activate_into`) and σ′(Z_k) ⊙ (W_{k+1}ᵀ Δ_{k+1}) by
``aten.gelu_backward`` / ``threshold_backward`` / ``tanh_backward``
(:func:`~implicitlab.models.architecture.activation_backward`), so the forward pass keeps only Z_k
(GELU, ReLU) or σ(Z_k) (tanh), never a σ′ buffer; the smooth ReLU, which has no fused kernel, keeps
σ′(Z_k) (:func:`~implicitlab.models.architecture.activate_with_derivatives`) and multiplies by it.
The backward pass is then one batched product per layer for Δ, one for the gradient and one
elementwise kernel.

Speed (issue #18, measured in one process, CPU time, 1,000 GELU runs of L = 10, d = 5, n = 50, one
thread on a loaded 2-core AVX-512 machine): 27.1k run·steps/s, the same as the earlier ten erf/exp
passes into σ′ buffers (27.3k). The fused float64 kernels are compute-bound (about 3 ns per element
forward, 4–5 backward: vectorised erf and exp), where the ten simple passes were memory-bound (about
1 ns each), so the elementwise share of a step did not shrink; a step is then about 1/3 batched
products (≈ 0.5 ms per 1,000-run product in the pipeline, memory-bound), 2/3 GELU kernels. What the
fused kernels buy is half the activation memory (Z and σ(Z) per hidden layer instead of four
buffers) and the very kernels autograd calls. Going faster needs the product and the activation
fused into one pass over the data (a compiled kernel), which PyTorch's eager ops do not offer: that is
:mod:`.fused_chain` (a C kernel built on first use, runs in vector lanes), which :func:`chain_gradients` takes for small
CPU chains with a shared batch (4.8× this batched pass on the setting above). ∂L/∂F is the
loss's own derivative (:func:`implicitlab.train.linear_grad.dloss_doutputs`: square, exp, logistic
written out, in the log domain for normalized GD; cross-entropy by autograd on the outputs only).

The shared first layer is one GEMM over all runs: W_1 stacked ``(R·w, d)`` times Xᵀ ``(d, n)``;
likewise its gradient Δ_1 stacked ``(R·w, n)`` times X. Runs share no parameter and every product
is per run, so a NaN in run r stays in run r (divergence is a per-run outcome, as with autograd).

Autograd would give the same numbers (``tests/train/test_chain_grad.py`` holds them against it run
by run, to 1e-12 in float64); writing the pass out removes the graph bookkeeping, which dominates for
the small models we sweep, and lets the buffers be reused from step to step (:class:`ChainWorkspace`).
"""

from __future__ import annotations

import torch

from ..models.architecture import DIFFERENTIABLE, activate_into, activate_with_derivatives, activation_backward
from . import fused_chain
from .linear_grad import dloss_doutputs


class ChainWorkspace:
    """Buffers reused from one step to the next (pre-activations and gradients), keyed by shape.

    A workspace belongs to one training loop: the gradients returned with it are overwritten by the
    next call, so use them (e.g. take the step) before calling again.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, key: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        k = (key, tuple(shape), like.dtype, like.device)
        buf = self._buffers.get(k)
        if buf is None:
            buf = self._buffers[k] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf


def _check(weights: list[torch.Tensor], head, X: torch.Tensor, activation: str) -> None:
    if activation not in DIFFERENTIABLE:
        raise ValueError(f"unknown activation {activation!r}; choose one of {list(DIFFERENTIABLE)}")
    if not weights:
        raise ValueError("a chain needs at least one layer")
    R = weights[0].shape[0]
    for k, W in enumerate(weights):
        if W.ndim != 3 or W.shape[0] != R:
            raise ValueError(f"layer {k}: weights must be (R={R}, out, in), got {tuple(W.shape)}")
        if k and W.shape[2] != weights[k - 1].shape[1]:
            raise ValueError(f"layer {k} takes {W.shape[2]} inputs but layer {k - 1} has {weights[k - 1].shape[1]} outputs")
        if W.dtype != X.dtype:
            raise ValueError(f"layer {k} is {W.dtype} but X is {X.dtype}")
    if X.shape[-1] != weights[0].shape[2]:
        raise ValueError(f"X has {X.shape[-1]} features, the first layer takes {weights[0].shape[2]}")
    if X.ndim == 3 and X.shape[0] != R:
        raise ValueError(f"per-run inputs must be (R={R}, B, d), got {tuple(X.shape)}")
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be (n, d) or (R, B, d), got {tuple(X.shape)}")
    if head is not None and (head.shape[0] != R or head.shape[2] != weights[-1].shape[1]):
        raise ValueError(f"head must be (R={R}, d_out, {weights[-1].shape[1]}), got {tuple(head.shape)}")


@torch.no_grad()
def chain_forward(
    weights: list[torch.Tensor],
    head: torch.Tensor | None,
    X: torch.Tensor,
    activation: str,
    eps: float = 0.1,
    *,
    workspace: ChainWorkspace | None = None,
    keep: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
    """Outputs Fᵀ ``(R, d_out, n)``, the inputs A_{k−1} of each layer and what the backward pass needs.

    ``inputs[0]`` is Xᵀ (a view ``(d, n)`` or ``(R, d, B)``); ``inputs[k]`` = σ(Z_k) ``(R, out_k, n)``;
    ``saved[k]`` is, for hidden layer k + 1, what :func:`~implicitlab.models.architecture.activation_backward`
    reads: Z itself (GELU, ReLU), σ(Z) (tanh), σ′(Z) (smooth ReLU), None (``"none"`` or ``keep=False``).
    """
    ws = workspace if workspace is not None else ChainWorkspace()
    R = weights[0].shape[0]
    n = X.shape[-2]
    XT = X.transpose(-1, -2)  # (d, n) or (R, d, B)
    L = len(weights)
    inputs: list[torch.Tensor] = [XT]
    saved: list[torch.Tensor | None] = []
    h = XT
    for k, W in enumerate(weights):
        out_k = W.shape[1]
        z = ws.get(f"z{k}", (R, out_k, n), W)
        if k == 0 and X.ndim == 2:  # one GEMM over all runs: (R·out, d) @ (d, n)
            torch.mm(W.reshape(R * out_k, W.shape[2]), XT, out=z.view(R * out_k, n))
        else:
            torch.bmm(W, h, out=z)  # (R, out_k, n)
        if k == L - 1:
            h = z
            break
        if activation == "none":
            a, s = z, None
        elif activation == "smooth_relu":  # no fused backward kernel: keep σ′ (one product on the way back)
            bufs = tuple(ws.get(f"{name}{k}", (R, out_k, n), W) for name in ("a", "s", "t"))
            a, s, _ = activate_with_derivatives(z, activation, eps, out=bufs)
        else:  # one fused kernel each way: keep Z (GELU, ReLU) or σ(Z) (tanh), no σ′ buffer
            a = activate_into(z, activation, eps, out=ws.get(f"a{k}", (R, out_k, n), W))
            s = a if activation == "tanh" else z
        inputs.append(a)
        saved.append(s if keep else None)
        h = a
    if head is not None:
        h = torch.bmm(head, h, out=ws.get("head_out", (R, head.shape[1], n), head))  # (R, d_out, n)
    return h, inputs, saved


@torch.no_grad()
def chain_gradients(
    weights: list[torch.Tensor],
    head: torch.Tensor | None,
    X: torch.Tensor,
    y: torch.Tensor,
    loss_name: str,
    reduction: str,
    normalized: bool,
    activation: str,
    eps: float = 0.1,
    *,
    workspace: ChainWorkspace | None = None,
    kernel: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-run objective ``(R,)`` (L, or log L when ``normalized``) and gradients ``[(R, out_k, in_k)]``.

    Small CPU chains with a shared batch take the compiled kernel of :mod:`.fused_chain` (forward,
    loss and backward fused, runs in vector lanes) where :func:`.fused_chain.supports` says so and ``kernel`` is
    True; everything else the batched PyTorch pass below. Both give the same numbers to rounding.

    Args:
        weights: ``[(R, out_k, in_k)]``, first layer first; any width per layer.
        head: fixed output matrix ``(R, d_out, width_L)`` or None.
        X: ``(n, d)`` shared data, or ``(R, B, d)`` per-run mini-batches; y to match (``(n,)``,
            ``(n, d_out)`` or ``(R, B[, d_out])``), as :func:`implicitlab.losses.loss` reads them.
        loss_name, reduction, normalized: as :func:`implicitlab.train.gradient_descent`.
        activation: ``"none" | "relu" | "gelu" | "smooth_relu" | "tanh"`` between layers (not after
            the last); eps: the smooth ReLU's ε.
        workspace: reuse buffers across calls (the returned gradients are then overwritten by the
            next call); None allocates fresh ones.
        kernel: allow the compiled kernel (False: always the batched PyTorch pass).
    """
    _check(weights, head, X, activation)
    ws = workspace if workspace is not None else ChainWorkspace()
    if kernel and fused_chain.supports(weights, head, X, loss_name, reduction, normalized, activation):
        out = [ws.get(f"g{k}", tuple(W.shape), W) for k, W in enumerate(weights)]
        return fused_chain.chain_step(weights, X, y, loss_name, reduction, activation, eps, grads=out)
    R = weights[0].shape[0]
    n = X.shape[-2]
    L = len(weights)
    FT, inputs, saved = chain_forward(weights, head, X, activation, eps, workspace=ws)
    value, dF = dloss_doutputs(loss_name, FT.transpose(-1, -2), y, reduction, normalized)  # dF (R, n, d_out)
    delta = dF.transpose(-1, -2)  # (R, d_out, n) = ∂L/∂Fᵀ
    if head is not None:
        delta = torch.bmm(head.transpose(-1, -2), delta, out=ws.get("dhead", (R, head.shape[2], n), head))

    grads: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
    for k in range(L - 1, -1, -1):
        W = weights[k]
        g = ws.get(f"g{k}", tuple(W.shape), W)
        if k == 0 and X.ndim == 2:  # (R·out, n) @ (n, d): one GEMM over all runs
            delta = delta.contiguous()
            torch.mm(delta.view(R * W.shape[1], n), X, out=g.view(R * W.shape[1], W.shape[2]))
        else:
            torch.bmm(delta, inputs[k].transpose(-1, -2), out=g)  # (R, out_k, in_k)
        grads[k] = g
        if k > 0:
            nxt = torch.bmm(W.transpose(-1, -2), delta, out=ws.get(f"d{k}", (R, W.shape[2], n), W))
            delta = activation_backward(nxt, saved[k - 1], activation, out=nxt)  # σ′(Z_{k−1}) ⊙ W_kᵀ Δ_k
    return value, grads
