"""The (ρ, V) dynamics of Poggio et al. 2018, Eqs. 48–52, against independent computations in float64.

Trajectories are integrated with classical RK4 at a step small enough that its error (O(h⁴)) is far
below the stated tolerances; the "independent" side always differentiates the plain network f(W) with
autograd, never the module's fields.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from implicitlab.train.normalized import (
    NormalizedTrainer,
    eq51_lambda,
    eq52_matrix,
    penalized_log_scaled_loss,
    relu_mlp,
    rho_v_field,
    rho_v_from_weights,
    sphere_equilibrium,
    weight_norm_field,
    weights_from_rho_v,
)

DT = torch.float64


def _problem(R=2, widths=(3, 4, 3, 1), n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, widths[0], generator=g, dtype=DT)
    y = torch.sign(torch.randn(n, generator=g, dtype=DT))
    W = [torch.randn(R, widths[k + 1], widths[k], generator=g, dtype=DT) / math.sqrt(widths[k])
         for k in range(len(widths) - 1)]
    return X, y, W


def _smooth_mlp(Ws, X):
    h = X.T.unsqueeze(0)
    for k, W in enumerate(Ws):
        h = W @ h
        if k < len(Ws) - 1:
            h = torch.tanh(h)
    return h[:, 0, :]


def _G(W, X, y, smooth=True):
    """G_k = −∂L/∂W_k for L = Σ_n e^{−y_n f(x_n)}, straight from autograd on f(W).

    The trajectory identities (b) ↔ preconditioned GD, (a) ↔ Eq. 48 + slowed Eq. 49, (c) ≡ (b) hold for any
    differentiable f (they only use W = ρV and the chain rule), so the ODE tests use a tanh network: with ReLU the
    field jumps where an activation changes sign and RK4 drops to first order there, which would hide a real
    error under the discretisation's. The pointwise tests use the ReLU network of the experiments.
    """
    Ws = [w.detach().clone().requires_grad_(True) for w in W]
    L = torch.exp(-y * (_smooth_mlp(Ws, X) if smooth else relu_mlp(Ws, X))).sum()
    return [-g for g in torch.autograd.grad(L, Ws)]


def _rk4(state, field, h, steps):
    for _ in range(steps):
        k1 = field(state)
        k2 = field([s + h / 2 * k for s, k in zip(state, k1)])
        k3 = field([s + h / 2 * k for s, k in zip(state, k2)])
        k4 = field([s + h * k for s, k in zip(state, k3)])
        state = [s + h / 6 * (a + 2 * b + 2 * c + d) for s, a, b, c, d in zip(state, k1, k2, k3, k4)]
    return state


def _col(x):
    return x[:, None, None]


def _max_diff(A, B):
    return max(float((a - b).abs().max()) for a, b in zip(A, B))


def assert_same_flow(solve):
    """``solve(h, steps) -> (A, B)``: two integrations of what should be one flow up to T = 0.5. Equal flows differ
    only by RK4's error, which falls ~16× when h halves (4th order); different flows leave a gap that does not
    shrink. We require a fall of ≥ 10× (or float64 rounding) and a gap < 1e-4 at h = 5e-3."""
    e1 = _max_diff(*solve(1e-2, 50))
    e2 = _max_diff(*solve(5e-3, 100))
    assert e2 <= max(e1 / 10, 1e-12) and e2 < 1e-4, (e1, e2)


def _rho_v_ode(K, X, y, *, slow_v=False):
    """Eqs. 48–49 (λ_k from Eq. 51) as an ODE on the flat state [ρ_1..ρ_K, V_1..V_K]; ``slow_v`` divides V̇_k by ρ_k²."""
    def field(state):
        rho, V = state[:K], state[K:]
        G = _G(weights_from_rho_v(rho, V), X, y)
        rho_dot, V_dot, _ = rho_v_field(rho, V, G)
        if slow_v:
            V_dot = [vd / _col(r) ** 2 for vd, r in zip(V_dot, rho)]
        return rho_dot + V_dot
    return field


def test_eqs_48_49_equal_preconditioned_gd_in_w():
    """(b) in W: Ẇ_k = Π_k G_k + ρ_k²(I − Π_k)G_k, Π_k the projection on W_k's direction (derived in the module)."""
    X, y, W0 = _problem()
    K = len(W0)
    rho0, V0 = rho_v_from_weights(W0)

    def w_field(W):
        G = _G(W, X, y)
        out = []
        for w, g in zip(W, G):
            r = torch.linalg.matrix_norm(w)
            v = w / _col(r)
            radial = _col((v * g).sum((-2, -1))) * v
            out.append(radial + _col(r) ** 2 * (g - radial))
        return out

    def solve(h, steps):
        st = _rk4(rho0 + V0, _rho_v_ode(K, X, y), h, steps)
        return _rk4(W0, w_field, h, steps), weights_from_rho_v(st[:K], st[K:])

    assert_same_flow(solve)
    st = _rk4(rho0 + V0, _rho_v_ode(K, X, y), 5e-3, 100)
    # and ‖V_k‖ stays 1 under the flow with the Eq. 51 λ (up to RK4's error)
    for v in st[K:]:
        # (RK4's error at h = 5e-3 is ~1e-5 here, measured by halving h in assert_same_flow)
        torch.testing.assert_close(torch.linalg.matrix_norm(v), torch.ones(v.shape[0], dtype=DT), rtol=0, atol=1e-4)


def test_plain_gd_is_eqs_48_49_with_v_slowed_by_rho_squared():
    """(a): ρ_k = ‖W_k‖ follows Eq. 48 exactly and W_k/‖W_k‖ follows Eq. 49 divided by ρ_k² — the exact form of
    'the same trajectory up to a time change' (a different factor per layer, not one global time change)."""
    X, y, W0 = _problem(seed=1)
    K = len(W0)
    rho0, V0 = rho_v_from_weights(W0)

    def solve(h, steps):
        rho_gd, V_gd = rho_v_from_weights(_rk4(W0, lambda W: _G(W, X, y), h, steps))
        st = _rk4(rho0 + V0, _rho_v_ode(K, X, y, slow_v=True), h, steps)
        return rho_gd + V_gd, st

    assert_same_flow(solve)


def test_rho_v_flow_is_not_a_time_change_of_gd():
    """Neither (b) nor (b) with λ = 0 moves W along the GD direction: the cosine of Ẇ with G is < 1."""
    X, y, W = _problem(R=1, seed=2)
    G = _G(W, X, y, smooth=False)
    rho, V = rho_v_from_weights(W)
    for eq51 in (True, False):
        rho_dot, V_dot, _ = rho_v_field(rho, V, G, eq51=eq51)
        Wdot = torch.cat([(_col(rd) * v + _col(r) * vd).flatten() for rd, v, r, vd in zip(rho_dot, V, rho, V_dot)])
        g = torch.cat([x.flatten() for x in G])
        cos = float(Wdot @ g / (Wdot.norm() * g.norm()))
        assert cos < 1 - 1e-3, (eq51, cos)


def test_weight_norm_flow_equals_rho_v_flow():
    """(c) from ‖v_k‖ = 1 and (b) are the same ODE: W(T) agrees."""
    X, y, W0 = _problem(seed=3)
    K = len(W0)
    rho0, V0 = rho_v_from_weights(W0)

    def wn(state):
        g, v = state[:K], state[K:]
        W = [_col(gk / torch.linalg.matrix_norm(vk)) * vk for gk, vk in zip(g, v)]
        gd, vd = weight_norm_field(g, v, _G(W, X, y))
        return gd + vd

    def solve(h, steps):
        a = _rk4(rho0 + V0, wn, h, steps)
        b = _rk4(rho0 + V0, _rho_v_ode(K, X, y), h, steps)
        Wa = [_col(gk / torch.linalg.matrix_norm(vk)) * vk for gk, vk in zip(a[:K], a[K:])]
        return Wa, weights_from_rho_v(b[:K], b[K:])

    assert_same_flow(solve)


def test_weight_norm_field_matches_torch_weight_norm():
    """Our (ġ, v̇) equal −∂L/∂(g, v) of ``torch.nn.utils.parametrizations.weight_norm(dim=None)``."""
    X, y, W = _problem(R=1, seed=4)
    layers = []
    for w in W:
        lin = nn.Linear(w.shape[2], w.shape[1], bias=False).to(DT)
        with torch.no_grad():
            lin.weight.copy_(w[0] * 1.7)  # ‖v‖ ≠ g: a generic point
        layers.append(nn.utils.parametrizations.weight_norm(lin, dim=None))
    with torch.no_grad():
        for lin in layers:
            lin.parametrizations.weight.original1.mul_(0.6)  # v scaled: ‖v‖ ≠ 1
    h = X
    for i, lin in enumerate(layers):
        h = lin(h)
        if i < len(layers) - 1:
            h = torch.relu(h)
    L = torch.exp(-y * h[:, 0]).sum()
    params = [(lin.parametrizations.weight.original0, lin.parametrizations.weight.original1) for lin in layers]
    grads = torch.autograd.grad(L, [p for pair in params for p in pair])
    g = [p[0].detach().reshape(1) for p in params]
    v = [p[1].detach().unsqueeze(0) for p in params]
    Wnow = [_col(gk / torch.linalg.matrix_norm(vk)) * vk for gk, vk in zip(g, v)]
    g_dot, v_dot = weight_norm_field(g, v, _G(Wnow, X, y, smooth=False))
    for k in range(len(layers)):
        torch.testing.assert_close(g_dot[k], -grads[2 * k].reshape(1), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(v_dot[k][0], -grads[2 * k + 1], rtol=1e-12, atol=1e-14)


def test_eq50_same_c_for_every_layer_and_eq51_keeps_norm():
    """Euler per layer: ⟨V_k, B_k⟩ = P Σ y f̃ e^{−P y f̃} is the same for every k; with Eq. 51's λ, ⟨V_k, V̇_k⟩ = 0."""
    X, y, W = _problem(seed=5)
    rho, V = rho_v_from_weights(W)
    G = _G(W, X, y, smooth=False)
    _, V_dot, B = rho_v_field(rho, V, G)
    C = [(v * b).sum((-2, -1)) for v, b in zip(V, B)]
    P = torch.stack(rho).prod(0)
    m = y * relu_mlp(V, X)  # (R, n) y f̃
    expected = P * (m * torch.exp(-P[:, None] * m)).sum(-1)
    for c in C:
        torch.testing.assert_close(c, expected, rtol=1e-12, atol=1e-14)
    for v, vd, b in zip(V, V_dot, B):
        torch.testing.assert_close((v * vd).sum((-2, -1)), torch.zeros(v.shape[0], dtype=DT), rtol=0, atol=1e-13)
        torch.testing.assert_close(eq51_lambda(v, b), (v * b).sum((-2, -1)) / 2, rtol=1e-12, atol=0)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_eq52_against_torch_func_hessian(lam):
    X, y, W = _problem(R=1, seed=6)
    V = [w[0] / torch.linalg.matrix_norm(w[0]) for w in W]
    shapes = [tuple(v.shape) for v in V]
    theta = torch.cat([v.reshape(-1) for v in V])
    P = 3.0
    logL = float(torch.logsumexp(-P * y * relu_mlp([v.unsqueeze(0) for v in V], X)[0], 0))
    lam_over_L = torch.full((len(V),), lam, dtype=DT)
    J = eq52_matrix(P, V, X, y, lam_over_L)
    H = torch.func.hessian(penalized_log_scaled_loss)(theta, shapes, X, y, P, logL, lam_over_L)
    assert J.dtype == DT and J.shape == H.shape == (theta.numel(), theta.numel())
    torch.testing.assert_close(J, -H, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(J, J.T, rtol=0, atol=1e-12)


def test_sphere_equilibrium_is_an_equilibrium_of_eq49():
    """Deep linear net (smooth): Riemannian GD reaches a point where Eq. 49's V̇ (λ from Eq. 51) vanishes."""
    X, y, W = _problem(R=1, widths=(3, 4, 1), n=6, seed=7)
    y = torch.sign(X @ torch.tensor([1.0, -0.5, 0.2], dtype=DT))  # separable through the origin
    V = [w[0] for w in W]
    eq = sphere_equilibrium(4.0, V, X, y, max_steps=3000, tol=1e-8, activation="linear")
    assert eq["residual"] < 1e-8
    for v in eq["V"]:
        assert abs(float(torch.linalg.matrix_norm(v)) - 1) < 1e-12
    rho = [torch.tensor([4.0], dtype=DT), torch.tensor([1.0], dtype=DT)]
    Vb = [v.unsqueeze(0) for v in eq["V"]]
    Ws = [w.detach().clone().requires_grad_(True) for w in weights_from_rho_v(rho, Vb)]
    L = torch.exp(-y * relu_mlp(Ws, X, "linear")).sum()
    G = [-g for g in torch.autograd.grad(L, Ws)]
    _, V_dot, B = rho_v_field(rho, Vb, G)
    for vd, b in zip(V_dot, B):
        assert float(vd.norm() / b.norm()) < 1e-7


def test_sphere_equilibrium_relu_stalls_on_an_activation_boundary():
    """ReLU: on this problem the minimiser on the spheres has a pre-activation at 0 (a kink): the search stalls
    with a finite residual instead of pretending to converge."""
    X, y, W = _problem(R=1, widths=(3, 4, 1), n=6, seed=7)
    y = torch.sign(X @ torch.tensor([1.0, -0.5, 0.2], dtype=DT))
    eq = sphere_equilibrium(4.0, [w[0] for w in W], X, y, max_steps=3000, tol=1e-9)
    assert eq["residual"] > 1e-3 and eq["min_preactivation"] < 1e-9


def test_trainer_small_steps_follow_the_flow():
    """Discrete (b) steps converge to the flow at first order: halving h halves the gap to RK4 of the flow."""
    X, y, W0 = _problem(seed=8)
    K = len(W0)
    rho0, V0 = rho_v_from_weights(W0)
    st = _rk4(rho0 + V0, _rho_v_ode(K, X, y), 1e-2, 10)  # T = 0.1
    exact = weights_from_rho_v(st[:K], st[K:])
    gaps = []
    for h, steps in ((1e-3, 100), (5e-4, 200)):
        tr = NormalizedTrainer("rho_v", W0)
        for _ in range(steps):
            tr.step(torch.full((W0[0].shape[0],), h, dtype=DT), _G(tr.weights(), X, y))
        gaps.append(_max_diff(tr.weights(), exact))
    assert 1.6 < gaps[0] / gaps[1] < 2.5, gaps


def test_trainer_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        NormalizedTrainer("adam", _problem()[2])
