"""Three ways to train a bias-free ReLU MLP, and the linearisation of Poggio et al. 2018, Sec. 13.

The network: f(W; x) = W_K σ(W_{K−1} ⋯ σ(W_1 x)), W_k of shape ``(d_k, d_{k−1})``, d_K = 1, σ = ReLU,
no biases. It is 1-homogeneous in each layer, so with W_k = ρ_k V_k (ρ_k > 0),
f(W; x) = P f̃(V; x), P = ∏_k ρ_k, f̃(V; x) = f(V; x)  (Poggio et al. 2018, Sec. 13, before Eq. 48),
and Euler's identity per layer gives ⟨V_k, ∂f̃/∂V_k⟩ = f̃ (the paper's Lemma 1 of [10], Eq. 41).
All functions carry a leading *run* dimension R (several initialisations trained side by side):
weights are lists of ``(R, d_k, d_{k−1})`` tensors.

Write G_k = −∂L/∂W_k for any loss L of the outputs (computed by autograd on f(W)).

Derivation of Eqs. 48–49 (GD on (ρ, V) of L(ρV) + Σ_k λ_k(‖V_k‖² − 1)). Since W_k = ρ_k V_k,
∂L/∂ρ_k = ⟨V_k, ∂L/∂W_k⟩ and ∂L/∂V_k = ρ_k ∂L/∂W_k, so

    ρ̇_k = ⟨V_k, G_k⟩                       (Eq. 48: for the exponential loss ⟨V_k, G_k⟩ =
                                              Σ_n (P/ρ_k) y_n f̃(x_n) e^{−P y_n f̃(x_n)}; the printed
                                              "ρ_1⋯ρ_{i−1}ρ_{i+1}⋯ρ_K" should read ρ_1⋯ρ_{k−1}ρ_{k+1}⋯ρ_K)
    V̇_k = ρ_k G_k − 2λ_k V_k = B_k − 2λ_k V_k     (Eq. 49: B_k = P Σ_n y_n ∂f̃/∂V_k e^{−P y_n f̃} = ρ_k G_k).

Eq. 50, exactly: ½ d‖V_k‖²/dt = ⟨V_k, B_k⟩ − 2λ_k‖V_k‖², and ⟨V_k, B_k⟩ = P Σ_n y_n f̃ e^{−P y_n f̃} =: C
is the same for every layer (Euler). The paper prints d‖V_k‖²/dt on the left (a factor 2 is missing)
and (V_k)² for ‖V_k‖². Eq. 51 with z = ‖V_k‖²: ż/2 = C − 2λ_k z, so the constraint ‖V_k‖ = 1 is kept
(ż = 0 at z = 1) by λ_k = C/2 — the paper's "C^k = 2λ_k". We use λ_k = ⟨V_k, B_k⟩/(2‖V_k‖²), which is
that value on the sphere and keeps ‖V_k‖ constant under the flow for any ‖V_k‖. With it,
V̇_k = ρ_k (I − V̂_k V̂_kᵀ) G_k: the tangential (projected) gradient, i.e. Eq. 43.

What the three parametrisations do to W (the exact statement behind "the same trajectory up to a time
change"). Write Π_k = V̂_k V̂_kᵀ (projection on W_k's own direction, acting on vec W_k):
  (a) plain GD flow:                   Ẇ_k = G_k;
  (b) Eqs. 48–49 with Eq. 51's λ_k:    Ẇ_k = ρ̇_k V_k + ρ_k V̇_k = Π_k G_k + ρ_k² (I − Π_k) G_k;
  (b₀) Eqs. 48–49 with λ_k = 0:        Ẇ_k = V_k V_kᵀ G_k + ρ_k² G_k (V_k not unit);
  (c) weight normalisation W_k = g_k v_k/‖v_k‖ (one g per layer, GD on (g, v)):
      ġ_k = ⟨v̂_k, G_k⟩, v̇_k = (g_k/‖v_k‖)(I − Π_k) G_k, ‖v_k‖ constant, Ẇ_k = Π_k G_k + (g_k/‖v_k‖)² (I − Π_k) G_k.
So (a) and (b) move ρ_k = ‖W_k‖ by the *same* law (Eq. 48) and the direction V̂_k along the same
field, (b) faster by the factor ρ_k² per layer: (b) is GD on W preconditioned by Π_k + ρ_k²(I − Π_k).
Neither (b) nor (b₀) is a global time change of (a) in general (the factor differs between the radial
and tangential parts, and between layers); what holds exactly is the preconditioned form above, which
the tests integrate. (c) started from ‖v_k‖ = 1 *is* (b) as a flow (same ODE for (ρ, V) = (g, v)).
Discrete steps of (b) and (c) change ‖V_k‖, ‖v_k‖ at second order in the step; we record the drift.

A positive scalar step schedule h_t multiplies every flow by the same factor: a time change that
leaves each flow's path unchanged, which is why the loss-scaled steps below reach small losses
without changing where the paths go (in the small-step limit).

Eq. 52 (the linearised V-dynamics at fixed ρ): J = ∂V̇/∂V = −∇²_V [L(ρV) + Σ_k λ_k(‖V_k‖² − 1)], for the
exponential loss L = Σ_n e^{−P y_n f̃_n}:
    J = Σ_n e^{−P y_n f̃_n} [−P² g_n g_nᵀ + P y_n ∂²f̃_n/∂V²] − 2 diag(λ_k I),   g_n = y_n ∂f̃_n/∂V,
which is the printed Eq. 52 with y_n folded into f̃ (y_n² = 1) and λ per layer. We return J/L (the
weights e^{−P y f̃_n}/L = softmax(−P y f̃)_n, computed in the log domain); dividing by L > 0 keeps the
signs of the eigenvalues.
"""

from __future__ import annotations

import math

import torch

LOSSES = ("exp", "square")
METHODS = ("gd", "rho_v", "weight_norm")


ACTIVATIONS = ("relu", "linear")


def relu_mlp(weights: list[torch.Tensor], X: torch.Tensor, activation: str = "relu") -> torch.Tensor:
    """Outputs ``(R, n)`` of the bias-free MLP; weights ``(R, d_k, d_{k−1})``, X ``(n, d_0)``.

    ``activation``: "relu" (the experiments' network) or "linear" (a deep linear network: the only smooth
    activation that keeps f 1-homogeneous in each layer, used where Eq. 52 needs a smooth equilibrium)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    h = X.T.unsqueeze(0)  # (1, d_0, n)
    for k, W in enumerate(weights):
        h = W @ h  # (R, d_k, n)
        if k < len(weights) - 1 and activation == "relu":
            h = torch.relu(h)
    return h[:, 0, :]  # (R, n)


def log_loss_of_outputs(outputs: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """log L per run, ``(R,)``: exp: L = Σ_n e^{−y_n f_n} (Eq. 30, a sum, by logsumexp); square: L = Σ_n (f_n − y_n)²."""
    if loss == "exp":
        return torch.logsumexp(-y * outputs, dim=-1)
    if loss == "square":
        return torch.log(((outputs - y) ** 2).sum(-1))
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def loss_gradient(weights: list[torch.Tensor], X: torch.Tensor, y: torch.Tensor, loss: str
                  ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """(log L ``(R,)``, −∇_W log L per layer, outputs ``(R, n)``): G_k/L with G_k = −∂L/∂W_k, in the log domain."""
    Ws = [W.detach().requires_grad_(True) for W in weights]
    out = relu_mlp(Ws, X)
    logL = log_loss_of_outputs(out, y, loss)
    grads = torch.autograd.grad(logL.sum(), Ws)
    return logL.detach(), [-g for g in grads], out.detach()


def _inner(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return (A * B).sum(dim=(-2, -1))  # (R,)


def _col(x: torch.Tensor) -> torch.Tensor:
    return x[:, None, None]


def rho_v_from_weights(weights: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(ρ_k = ‖W_k‖_F ``(R,)``, V_k = W_k/ρ_k) per layer."""
    rho = [torch.linalg.matrix_norm(W) for W in weights]
    return rho, [W / _col(r) for W, r in zip(weights, rho)]


def weights_from_rho_v(rho: list[torch.Tensor], V: list[torch.Tensor]) -> list[torch.Tensor]:
    return [_col(r) * v for r, v in zip(rho, V)]


def eq51_lambda(V: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """λ_k = ⟨V_k, B_k⟩/(2‖V_k‖²) ``(R,)``: the Eq. 51 choice that keeps ‖V_k‖ constant under the flow."""
    return _inner(V, B) / (2 * _inner(V, V))


def rho_v_field(rho: list[torch.Tensor], V: list[torch.Tensor], G: list[torch.Tensor], *, eq51: bool = True
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(ρ̇_k, V̇_k, B_k) of Eqs. 48–49 given G_k = −∂L/∂W_k at W = ρV; λ_k from Eq. 51 (``eq51``) or 0."""
    rho_dot = [_inner(v, g) for v, g in zip(V, G)]  # Eq. 48
    B = [_col(r) * g for r, g in zip(rho, G)]  # B_k = ρ_k G_k
    if eq51:
        V_dot = [b - 2 * _col(eq51_lambda(v, b)) * v for v, b in zip(V, B)]  # Eq. 49
    else:
        V_dot = list(B)
    return rho_dot, V_dot, B


def weight_norm_field(g: list[torch.Tensor], v: list[torch.Tensor], G: list[torch.Tensor]
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(ġ_k, v̇_k) of GD on W_k = g_k v_k/‖v_k‖ (one scalar g per layer: ``weight_norm(dim=None)`` written out)."""
    g_dot, v_dot = [], []
    for gk, vk, Gk in zip(g, v, G):
        nv = torch.linalg.matrix_norm(vk)  # (R,)
        vh = vk / _col(nv)
        radial = _inner(vh, Gk)
        g_dot.append(radial)
        v_dot.append(_col(gk / nv) * (Gk - _col(radial) * vh))
    return g_dot, v_dot


class NormalizedTrainer:
    """R runs of one method ("gd", "rho_v", "weight_norm") from the same weights, one scalar step per run.

    ``step(h, G)`` moves along the method's field with step ``h`` ``(R,)``, given G_k (any positive multiple
    of −∂L/∂W_k: the multiple is a time change). ``weights()`` gives W_k in every method.
    """

    def __init__(self, method: str, weights: list[torch.Tensor]):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        if method == "gd":
            self.a = [W.detach().clone() for W in weights]
            self.b: list[torch.Tensor] = []
        else:
            # (b): ρ = ‖W‖, V = W/‖W‖; (c): g = ‖W‖, v = W/‖W‖ (so ‖v‖ = 1 at the start)
            rho, V = rho_v_from_weights([W.detach() for W in weights])
            self.a, self.b = [r.clone() for r in rho], [v.clone() for v in V]

    def weights(self) -> list[torch.Tensor]:
        if self.method == "gd":
            return self.a
        if self.method == "rho_v":
            return weights_from_rho_v(self.a, self.b)
        return [_col(g / torch.linalg.matrix_norm(v)) * v for g, v in zip(self.a, self.b)]

    def field(self, G: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.method == "gd":
            return G, []
        if self.method == "rho_v":
            rho_dot, V_dot, _ = rho_v_field(self.a, self.b, G)
            return rho_dot, V_dot
        return weight_norm_field(self.a, self.b, G)

    def step(self, h: torch.Tensor, G: list[torch.Tensor]) -> None:
        da, db = self.field(G)
        hv = h if self.method != "gd" else _col(h)
        self.a = [x + hv * d for x, d in zip(self.a, da)]
        self.b = [x + _col(h) * d for x, d in zip(self.b, db)]

    def unit_norm_drift(self) -> torch.Tensor:
        """max_k |‖V_k‖ − 1| ``(R,)`` for (b) and (c) (0 for plain GD, which has no V)."""
        if self.method == "gd":
            return torch.zeros_like(self.a[0][:, 0, 0])
        return torch.stack([(torch.linalg.matrix_norm(v) - 1).abs() for v in self.b]).amax(0)


# --- Eq. 52, one run (no run dimension), float64 -------------------------------------------------------------

def _unflatten(theta: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    out, i = [], 0
    for a, b in shapes:
        out.append(theta[i:i + a * b].reshape(a, b))
        i += a * b
    return out


def _signed_outputs(theta: torch.Tensor, shapes, X: torch.Tensor, y: torch.Tensor, activation: str = "relu"
                    ) -> torch.Tensor:
    return y * relu_mlp([W.unsqueeze(0) for W in _unflatten(theta, shapes)], X, activation)[0]  # (n,) y_n f̃(V; x_n)


def eq52_matrix(P: float, V: list[torch.Tensor], X: torch.Tensor, y: torch.Tensor, lam_over_L: torch.Tensor,
                activation: str = "relu") -> torch.Tensor:
    """J/L of Eq. 52 at V (list of ``(d_k, d_{k−1})``), P = ∏ρ, λ_k/L ``(K,)``: ``(p, p)``, p = Σ d_k d_{k−1}.

    Assembled term by term from the per-example gradients g_n (a Jacobian) and the weighted sum of per-example
    Hessians Σ_n w_n ∂²(y_n f̃_n) (the Hessian of Σ_n w_n y_n f̃_n with w fixed), by ``torch.autograd.functional``
    — not from the Hessian of the loss (the tests compare the two, with ``torch.func.hessian``)."""
    shapes = [tuple(v.shape) for v in V]
    theta = torch.cat([v.reshape(-1) for v in V]).detach()
    m = _signed_outputs(theta, shapes, X, y, activation)  # (n,)
    w = torch.softmax(-P * m, dim=0).detach()  # (n,) e^{−P m_n}/L
    g = torch.autograd.functional.jacobian(lambda th: _signed_outputs(th, shapes, X, y, activation), theta)  # (n, p)
    Hw = torch.autograd.functional.hessian(lambda th: (w * _signed_outputs(th, shapes, X, y, activation)).sum(),
                                           theta)  # (p, p)
    J = -P ** 2 * (g.T * w) @ g + P * Hw
    diag = torch.cat([lam.expand(a * b) for lam, (a, b) in zip(lam_over_L, shapes)])
    return J - 2 * torch.diag(diag)


def penalized_log_scaled_loss(theta: torch.Tensor, shapes, X, y, P: float, log_L_ref: float,
                              lam_over_L: torch.Tensor, activation: str = "relu") -> torch.Tensor:
    """[Σ_n e^{−P y_n f̃_n(V)} + Σ_k λ_k(‖V_k‖² − 1)]/L_ref as a function of flat V (for ``torch.func.hessian``)."""
    m = _signed_outputs(theta, shapes, X, y, activation)
    pen = sum(lam * ((v ** 2).sum() - 1) for lam, v in zip(lam_over_L, _unflatten(theta, shapes)))
    return torch.exp(-P * m - log_L_ref).sum() + pen


def sphere_equilibrium(P: float, V: list[torch.Tensor], X: torch.Tensor, y: torch.Tensor, *,
                       max_steps: int = 5000, tol: float = 1e-11, activation: str = "relu") -> dict:
    """The λ > 0 equilibrium of Eq. 49 at fixed ρ: a critical point of L(ρV) on ∏_k {‖V_k‖ = 1}.

    ``max_steps = 0`` only evaluates the point given (residual, λ). Riemannian gradient descent on log L (same critical points and same local-minimum status on the
    spheres as L) with the retraction V_k ← V_k/‖V_k‖ and a backtracking step, from V. At the end
    λ_k/L = ⟨V_k, B_k⟩/(2L) (Eq. 51 on the sphere). Returns V, ``lam_over_L`` ``(K,)``, ``log_L``,
    ``residual`` = max_k ‖(I − V_kV_kᵀ)B_k‖/‖B_k‖ (0 at an equilibrium), ``steps`` and
    ``min_preactivation`` = min |pre-activation| over hidden units and examples, relative to its largest (ReLU;
    NaN for the linear network, which has no kinks).

    With ReLU the minimiser can sit on an activation boundary (a pre-activation exactly 0): the field is not
    differentiable there, the tangential residual stays finite, and Eq. 52 is not defined (the paper's
    "Filippov sense"); the residual and ``min_preactivation`` show it.
    """
    shapes = [tuple(v.shape) for v in V]
    Vs = [v / torch.linalg.matrix_norm(v) for v in V]

    def value_and_tangent(vs):
        theta = torch.cat([v.reshape(-1) for v in vs]).requires_grad_(True)
        logL = torch.logsumexp(-P * _signed_outputs(theta, shapes, X, y, activation), 0)
        (grad,) = torch.autograd.grad(logL, theta)
        gs = _unflatten(-grad, shapes)  # −∂log L/∂V_k = B_k/L (B_k = −∂L/∂V_k at fixed ρ, Eq. 49)
        tang = [gk - (gk * vk).sum() * vk for gk, vk in zip(gs, vs)]
        return logL.detach(), gs, tang

    logL, gs, tang = value_and_tangent(Vs)
    h, steps = 1.0, 0
    for steps in range(1, max_steps + 1) if max_steps > 0 else ():
        res = max(float(torch.linalg.norm(t) / torch.linalg.norm(gk)) for t, gk in zip(tang, gs))
        if res < tol:
            break
        tn2 = sum(float((t ** 2).sum()) for t in tang)
        while True:
            trial = [(v + h * t) / torch.linalg.matrix_norm(v + h * t) for v, t in zip(Vs, tang)]
            new_logL, new_gs, new_tang = value_and_tangent(trial)
            if float(new_logL) <= float(logL) - 0.25 * h * tn2 or h < 1e-20:
                break
            h *= 0.5
        if h < 1e-20:  # no descent along the tangential gradient: stalled (at a ReLU kink), stop here
            break
        Vs, logL, gs, tang = trial, new_logL, new_gs, new_tang
        h *= 2.0
    res = max(float(torch.linalg.norm(t) / torch.linalg.norm(gk)) for t, gk in zip(tang, gs))
    # λ_k/L = ⟨V_k, B_k⟩/(2L) (Eq. 51 on the sphere)
    lam = torch.stack([(gk * vk).sum() / 2 for gk, vk in zip(gs, Vs)])
    pre, h_ = [], X.T
    for k, v in enumerate(Vs[:-1]):
        h_ = v @ h_
        pre.append(h_.abs().flatten())
        if activation == "relu":
            h_ = torch.relu(h_)
    pre_all = torch.cat(pre) if pre and activation == "relu" else None
    min_pre = float(pre_all.min() / pre_all.max()) if pre_all is not None else float("nan")  # ReLU kinks only
    return {"V": [v.detach() for v in Vs], "lam_over_L": lam.detach(), "log_L": float(logL), "residual": res,
            "steps": steps, "min_preactivation": min_pre}


def flow_time_increment_log(h: torch.Tensor, log_L: torch.Tensor, loss: str) -> torch.Tensor:
    """log of the flow time a step covers: the step h moves along −∇log L = −∇L/L, i.e. h/L units of
    gradient-flow time on L (exp); along −∇L directly for the square loss (h)."""
    return torch.log(h) - log_L if loss == "exp" else torch.log(h)


def safe_log(x: float) -> float:
    return math.log(x) if x > 0 else float("nan")
