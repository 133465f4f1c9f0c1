"""Closed-form gradients for linear networks (any depth, no activation), batched over runs.

For f(x) = P x with the end-to-end matrix P = A_k W_k B_k, where B_k = W_{k−1}⋯W_1 (prefix)
and A_k = [head] W_L⋯W_{k+1} (suffix, ``(R, d_out, out_k)``), the chain rule gives

    ∂L/∂W_k = A_kᵀ G B_kᵀ,   G = ∂L/∂P = (∂L/∂F)ᵀ X   (F = X Pᵀ, the outputs ``(R, n, d_out)``).

∂L/∂F is written out per loss (m = y·f the margins, c = 1/n for a mean, 1 for a sum):

- square: 2c (F − y); with the sufficient statistics, G = 2(PΣ − bᵀ) needs no pass over the data.
- exp: −c y e^{−m};  logistic: −c y σ(−m).
- normalized GD differentiates log L (Nacson et al. 2019: step η∇L/L), in the log domain:
  exp: ∂log L/∂f_n = −y_n softmax_n(−m); logistic: −y_n exp(log σ(−m_n) − logsumexp_j log ℓ_j),
  with log σ(−m) = −softplus(m). Nothing is divided by an underflowed L.

Autograd would give the same numbers (the tests hold them against it); writing the backward pass
out removes the per-step graph bookkeeping, which dominates for the small models we sweep.
Cross-entropy falls back to autograd on the outputs only. :func:`dloss_doutputs` is shared with the
nonlinear chains of :mod:`implicitlab.train.chain_grad`.
"""

from __future__ import annotations

import math

import torch

from ..losses import log_loss, log_loss_terms, loss, softplus


def dloss_doutputs(
    loss_name: str, F: torch.Tensor, y: torch.Tensor, reduction: str, normalized: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective per run ``(R,)`` and its gradient with respect to the outputs F ``(R, n, d_out)``."""
    n = F.shape[-2]
    c = 1.0 / n if reduction == "mean" else 1.0
    if loss_name in ("exp", "logistic") and F.shape[-1] == 1:
        f = F[..., 0]  # (R, n)
        yy = y.to(F.dtype)
        m = yy * f
        if normalized:
            logs = log_loss_terms(loss_name, F, y)  # (R, n)
            log_total = torch.logsumexp(logs, dim=-1, keepdim=True)  # (R, 1)
            if loss_name == "exp":
                weight = torch.exp(logs - log_total)  # softmax of −m
            else:
                weight = torch.exp(-softplus(m) - log_total)  # σ(−m) / Σ ℓ_j
            obj = log_total.squeeze(-1) + math.log(c)
            return obj, (-yy * weight).unsqueeze(-1)
        if loss_name == "exp":
            terms = torch.exp(-m)
            deriv = -terms
        else:
            terms = softplus(-m)
            deriv = -torch.sigmoid(-m)
        return c * terms.sum(-1), (c * yy * deriv).unsqueeze(-1)
    if loss_name == "square" and not normalized:
        t = y.to(F.dtype)
        if F.shape[-1] == 1:  # scalar outputs: targets (…, n) or (…, n, 1), as in losses.loss_terms
            if t.ndim >= 1 and t.shape[-1] == 1:
                t = t.squeeze(-1)
            t = t.unsqueeze(-1)  # (…, n) → (…, n, 1)
        diff = F - t
        return c * (diff**2).sum((-1, -2)), 2.0 * c * diff
    # general fallback (cross-entropy, normalized square): autograd on the outputs only
    Fl = F.detach().requires_grad_(True)
    with torch.enable_grad():
        obj = (log_loss if normalized else loss)(loss_name, Fl, y, reduction)
        (g,) = torch.autograd.grad(obj.sum(), Fl)
    return obj.detach(), g


def _dloss_dmargins(loss_name: str, m: torch.Tensor, c: float, normalized: bool):
    """Objective ``(R,)`` and its derivative with respect to the margins m ``(R, n)`` (binary losses)."""
    if loss_name == "exp":
        logs = -m
        if normalized:
            log_total = torch.logsumexp(logs, dim=-1, keepdim=True)
            return log_total.squeeze(-1) + math.log(c), -torch.exp(logs - log_total)
        e = torch.exp(logs)
        return c * e.sum(-1), e.mul_(-c)
    # logistic: ℓ = softplus(−m), ℓ' = −σ(−m)
    if normalized:
        from ..losses import log_softplus

        log_total = torch.logsumexp(log_softplus(-m), dim=-1, keepdim=True)
        return log_total.squeeze(-1) + math.log(c), -torch.exp(-softplus(m) - log_total)
    return c * softplus(-m).sum(-1), torch.sigmoid(-m).mul_(-c)


@torch.no_grad()
def linear_chain_gradients(
    weights: list[torch.Tensor],
    head: torch.Tensor | None,
    X: torch.Tensor,
    y: torch.Tensor,
    loss_name: str,
    reduction: str,
    normalized: bool,
    stats=None,
    yX: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-run objective ``(R,)`` and gradients ``[(R, out_k, in_k)]`` of a linear chain.

    Args:
        weights: ``[(R, out_k, in_k)]``, first layer first.
        head: fixed output matrix ``(R, d_out, d)`` or None.
        X: ``(n, d)`` shared data, or ``(R, B, d)`` per-run mini-batches; y to match.
        stats: square-loss sufficient statistics (full batch only), see :class:`implicitlab.losses.SquareLossStats`.
        yX: ``(n, d)`` rows y_n x_n (full batch, exp/logistic, scalar output): margins are then
            m = P (yX)ᵀ and G = (∂L/∂m) yX, with no separate pass over the labels.
    """
    L = len(weights)
    # suffix[k] = [head] W_L⋯W_{k+1} (A_k, (R, d_out, out_k)); suffix[L-1] = head, or None for I.
    # Multiplying from the output side keeps every product (d_out × ·)(· × ·): vector–matrix.
    suffix: list[torch.Tensor | None] = [None] * L
    suffix[L - 1] = head
    for k in range(L - 2, -1, -1):
        nxt = suffix[k + 1]
        suffix[k] = weights[k + 1] if nxt is None else torch.matmul(nxt, weights[k + 1])
    P = weights[0] if suffix[0] is None else torch.matmul(suffix[0], weights[0])  # (R, d_out, d)

    if stats is not None:
        value = stats.loss(P)
        G = 2.0 * (stats.times_sigma(P) - stats.b_t)  # (R, d_out, d)
        if normalized:
            G = G / value.view(-1, 1, 1)
            value = torch.log(value)
    elif yX is not None and loss_name in ("exp", "logistic") and P.shape[-2] == 1:
        m = torch.matmul(P, yX.T)[:, 0, :]  # (R, n) margins
        c = 1.0 / yX.shape[0] if reduction == "mean" else 1.0
        value, dm = _dloss_dmargins(loss_name, m, c, normalized)
        G = torch.matmul(dm.unsqueeze(1), yX)  # (R, 1, d)
    else:
        F = torch.matmul(X, P.transpose(-1, -2))  # (R, n, d_out)
        value, dF = dloss_doutputs(loss_name, F, y, reduction, normalized)
        G = torch.matmul(dF.transpose(-1, -2), X)  # (R, d_out, d)

    # H_k = G B_kᵀ with B_k = W_{k−1}⋯W_1, built forward: H_1 = G, H_{k+1} = H_k W_kᵀ.
    grads = []
    H = G  # (R, d_out, in_k)
    for k in range(L):
        if suffix[k] is None:
            grads.append(H)
        elif H.shape[-2] == 1:  # one output: the outer product A_kᵀ H as a broadcast (faster than bmm)
            grads.append(suffix[k].transpose(-1, -2) * H)
        else:
            grads.append(torch.matmul(suffix[k].transpose(-1, -2), H))
        if k < L - 1:
            H = torch.matmul(H, weights[k].transpose(-1, -2))
    return value, grads
