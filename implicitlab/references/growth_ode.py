r"""Growth of the layer norms of a deep network under gradient flow on the exponential loss.

Reference: T. Poggio et al., "Theory of Deep Learning III: explaining the non-overfitting
puzzle" (CBMM Memo 073, v. IIIb, 2018), Section 14 "Rate of growth of weights", Eqs. 53-57
and Figure 7.  The printed equations carry typos; this module implements the derivation
below, which is checked by the closed forms and tests, and lists every departure from the
printed text.

Setting
-------
One training example (N = 1), K layers, f = f~ * prod_k rho_k with rho_k = ||W_k|| and f~ the
output of the normalized network (each W_k / rho_k).  We take y f~ > 0 and f~ held fixed: the
asymptotic regime in which the directions V_k = W_k / rho_k have converged and only the norms
move.  The loss is L = exp(-f~ P) with P = prod_i rho_i.

Per-layer norm dynamics (corrected Eq. 53)
------------------------------------------
Gradient flow dW_k/dt = -dL/dW_k = e^{-f} df/dW_k, and Euler's identity for a network that is
1-homogeneous in each layer, <W_k, df/dW_k> = f, give

    rho_k rho_k' = (1/2) d||W_k||^2/dt = <W_k, dW_k/dt> = e^{-f} f = f~ P e^{-f~ P}.     (53')

The printed (53) has the partial product prod_{i<=k} rho_i and sum_{i<=k} rho_i in the
exponent: both are typos (the loss depends on the full product; cf. Eq. 48, whose
rho_k' = f~ (P / rho_k) e^{-f~ P} is exactly 53').  The printed Eq. 54 for K = 2
(gamma' = f~^2 r^2, r r' = 2 log(gamma)/gamma with r^2 = rho_1^2 + rho_2^2,
gamma = e^{f~ rho_1 rho_2}) is what 53' gives, which confirms the reading.

Conservation and the scalar ODE
-------------------------------
The right side of 53' does not depend on k, so rho_k^2 - rho_j^2 is conserved and

    rho_k(t)^2 = rho_k(0)^2 + c(t),   c' = 2 f~ P(c) e^{-f~ P(c)},   c(0) = 0,
    P(c) = prod_k sqrt(rho_k(0)^2 + c).

This holds for any (unbalanced) start; since c -> infinity, rho_k / rho_j -> 1: every start
becomes balanced in ratio.

Balanced layers (corrected Eqs. 55-57)
--------------------------------------
With rho_k = rho for all k, P = rho^K and 53' becomes

    rho' = f~ rho^{K-1} e^{-f~ rho^K}.                                                  (55')

The printed (55) has an extra factor K and exponent -rho_k f~ instead of -rho^K f~.  The
factor K is what one gets when the K layers are tied to ONE shared scalar rho
(f = f~ rho^K, gradient flow on rho); for independent layers it is absent (the tied model is
the independent one run at K times the speed).  With u = f~ P = f~ rho^K and R = e^u:

    P' = K rho^{K-1} rho' = K f~ P^{2-2/K} e^{-u},
    (e^{f~ rho^K})' = K f~^2 rho^{2K-2},                                                (56')
    R' = K f~^{2/K} (log R)^{2-2/K},       u' = K f~^{2/K} u^{2-2/K} e^{-u}.            (57')

The printed (56) and (57) have K^2 (the tied-model factor squared into K * K) and write the
exponent as rho_k f~ instead of rho^K f~.

Closed forms
------------
* K = 1: R' = f~^2, so R = f~^2 t + e^{f~ rho(0)} and

      rho(t) = log(f~^2 t + e^{f~ rho(0)}) / f~.

  Check: rho' = f~^2 / (f~ R) = f~ e^{-f~ rho}, which is 55' for K = 1.
* K = 2, balanced: R' = 2 f~ log R, so dR / log R = 2 f~ dt and li(R) = 2 f~ t + li(R(0)).
  With li(e^u) = Ei(u) this reads

      Ei(u(t)) = 2 f~ t + Ei(f~ P(0)),   P(t) = u(t) / f~.

  Check: d Ei(u)/dt = (e^u / u) u' = 2 f~ is 57' for K = 2.  The printed text gives
  R = li^{-1}(f~ K^2 t + C) = li^{-1}(4 f~ t + C): again the extra factor K.

Asymptotics for general K
-------------------------
Separating 57': int_{u(0)}^{u} e^v v^{-a} dv = K f~^{2/K} t with a = 2 - 2/K.  Integration by
parts gives int^u e^v v^{-a} dv = e^u u^{-a} (1 + a/u + O(u^{-2})), so
u - a log u = log(K f~^{2/K} t) + o(1) and, iterating once,

    f~ P(t) = u(t) = log t + (2 - 2/K) log log t + log(K f~^{2/K}) + o(1)

(the o(1) term is O(a^2 log log t / log t); more sharply u - a log u - log(K f~^{2/K} t)
= -log(1 + a/u) + O(u^{-2}), which the tests check).  Hence f~ P - log t grows like
(2 - 2/K) log log t for K > 1: the product of the norms grows faster than log t / f~, while
each layer rho = P^{1/K} ~ (log t / f~)^{1/K} grows slower than log t (Figure 7, left and
right).  For K = 1 the excess tends to log f~^2.  For an unbalanced start,
sum_k 1/rho_k^2 = (K / rho^2)(1 + O(1/c)) changes u' by a factor 1 + O(u^{-2/K}), so the same
expansion holds.  The loss behaves as e^{-u} ~ 1 / (K f~^{2/K} t (log t)^{2-2/K}), the
Theta(1 / (t (log t)^{2-2/L})) rate known for L-homogeneous networks (Lyu & Li, ICLR 2020).

Numerics
--------
The ODE for c is integrated in log-time s = log(1 + t), dc/ds = 2 f~ P exp(s - f~ P), with
the exponent combined before exponentiating so that nothing overflows or underflows for t
up to ~1e300.  In s the linearization has rate ~ -1, so an explicit high-order method
(DOP853) is adequate.  The loss is reported as log_loss = -f~ P.

Other remarks on Sec. 13-14 (not used by the code)
--------------------------------------------------
* Eq. 48: the product over "i-1, i+1" should skip k (rho_1 ... rho_{k-1} rho_{k+1} ... rho_K).
* Eq. 50: d||V_k||^2/dt = 2 <V_k, V_k'>, so the middle and right sides of (50) are half of the
  left side, and the penalty term should read 2 lambda_k ||V_k||^2, not 2 lambda_k (V_k)^2.
* The K -> infinity statement R = L^{-1}(alpha_inf t + C) with L(z) = li(z) - z / log z is the
  correct antiderivative of 1/(log R)^2, but alpha_inf = lim f~^{2/K} K^2 (or K f~^{2/K} with
  the corrected factor) diverges; the limit only makes sense in rescaled time (tau = K t
  here, K^2 t in the printed normalization), where dR/dtau -> (log R)^2 and L(R) = tau + C.
* li(z) = int_0^z dt / log t needs a principal value through t = 1; only R > 1 is used here.
* Figure 7 caption: "the product of weights prod_{i=1}^K" is missing rho_i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp
from scipy.special import expi

__all__ = [
    "NormGrowthSolution",
    "solve_norm_growth",
    "product_norm_k1",
    "product_norm_k2_balanced",
    "product_norm_asymptotic",
    "excess_over_log",
    "gd_norm_growth",
]


@dataclass(frozen=True)
class NormGrowthSolution:
    """Layer norms along the flow of Eq. 53' (Poggio et al. 2018, Sec. 14).

    Attributes:
        t: times, shape (T,).
        rho: layer norms rho_k(t), shape (T, K).
        product: P(t) = prod_k rho_k(t), shape (T,).
        log_loss: log of the loss, -f~ P(t), shape (T,).
        success: whether the integrator reached the last time.
        message: the integrator's message.
    """

    t: np.ndarray
    rho: np.ndarray
    product: np.ndarray
    log_loss: np.ndarray
    success: bool
    message: str


# --------------------------------------------------------------------------- validation


def _check_rho0(rho0) -> np.ndarray:
    r = np.asarray(rho0, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError("rho0 must be a non-empty 1-D array of layer norms")
    if not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("rho0 must be finite and > 0")
    return r


def _check_positive(x, name: str) -> float:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 0 or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite scalar > 0")
    return float(v)


def _check_times(t, *, sorted_1d: bool) -> np.ndarray:
    a = np.asarray(t, dtype=np.float64)
    if sorted_1d and (a.ndim != 1 or a.size == 0):
        raise ValueError("t must be a non-empty 1-D array")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("t must be finite and >= 0")
    if sorted_1d and np.any(np.diff(a) < 0):
        raise ValueError("t must be sorted in increasing order")
    return a


# --------------------------------------------------------------------------- ODE


def _log_product(rho0_sq: np.ndarray, c) -> np.ndarray:
    """log P = (1/2) sum_k log(rho_k(0)^2 + c), for scalar or 1-D c."""
    c = np.asarray(c, dtype=np.float64)
    return 0.5 * np.sum(np.log(rho0_sq + c[..., None]), axis=-1)


def solve_norm_growth(rho0, f_tilde, t, *, rtol: float = 1e-10, atol: float = 1e-12) -> NormGrowthSolution:
    """Integrate the layer-norm flow rho_k rho_k' = f~ P e^{-f~ P} (corrected Eq. 53).

    Uses the conservation of rho_k^2 - rho_j^2 (Poggio et al. 2018, Sec. 14): rho_k^2 =
    rho_k(0)^2 + c with c' = 2 f~ P e^{-f~ P}, integrated in log-time s = log(1 + t) with the
    loss kept in the log domain, so t may reach ~1e300.

    Args:
        rho0: initial layer norms, shape (K,), all > 0 (need not be balanced).
        f_tilde: output of the normalized network times the label, > 0 (held fixed).
        t: increasing 1-D array of times >= 0.
        rtol, atol: tolerances for scipy.integrate.solve_ivp (DOP853) on c.

    Returns:
        NormGrowthSolution at the requested times (NaN past a point where the solver failed).
    """
    r0 = _check_rho0(rho0)
    f = _check_positive(f_tilde, "f_tilde")
    times = _check_times(t, sorted_1d=True)
    rtol = _check_positive(rtol, "rtol")
    atol = _check_positive(atol, "atol")

    r0_sq = r0 * r0
    log_f = math.log(f)
    s_eval, inverse = np.unique(np.log1p(times), return_inverse=True)
    inverse = inverse.reshape(-1)

    def rhs(s, y):
        c = max(y[0], 0.0)  # c >= 0 along the true solution; guards trial stages
        log_p = float(_log_product(r0_sq, c))
        u = f * math.exp(log_p)
        # dc/ds = (1 + t) * 2 f~ P e^{-f~ P} = 2 exp(log f~ + log P + s - u).  Along the
        # solution the exponent stays O(log u); the cap only protects wild trial stages.
        return [2.0 * math.exp(min(log_f + log_p + s - u, 700.0))]

    c = np.full(s_eval.shape, np.nan)
    if s_eval[-1] == 0.0:
        c[:] = 0.0
        success, message = True, "all requested times are 0"
    else:
        sol = solve_ivp(
            rhs, (0.0, float(s_eval[-1])), [0.0], method="DOP853",
            t_eval=s_eval, rtol=rtol, atol=atol,
        )
        c[: sol.y.shape[1]] = sol.y[0]
        success, message = bool(sol.success), str(sol.message)

    c = np.maximum(c, 0.0)[inverse]
    rho = np.sqrt(r0_sq + c[:, None])
    product = np.exp(_log_product(r0_sq, c))
    return NormGrowthSolution(times, rho, product, -f * product, success, message)


# --------------------------------------------------------------------------- closed forms


def product_norm_k1(t, f_tilde, rho0) -> np.ndarray:
    """K = 1 closed form: rho(t) = log(f~^2 t + e^{f~ rho(0)}) / f~ (Sec. 14, corrected Eq. 57).

    Evaluated with logaddexp, so it is exact in floating point for t up to ~1e308.
    """
    times = _check_times(t, sorted_1d=False)
    f = _check_positive(f_tilde, "f_tilde")
    r0 = _check_positive(rho0, "rho0")
    with np.errstate(divide="ignore"):
        log_t = np.log(times)  # -inf at t = 0, which logaddexp handles
    return np.logaddexp(2.0 * math.log(f) + log_t, f * r0) / f


def _scaled_ei(u: np.ndarray) -> np.ndarray:
    """e^{-u} Ei(u) for u > 0, without overflow (asymptotic series for u > 500)."""
    u = np.asarray(u, dtype=np.float64)
    out = np.empty_like(u)
    small = u <= 500.0
    out[small] = expi(u[small]) * np.exp(-u[small])
    x = u[~small]
    if x.size:
        term = 1.0 / x
        total = term.copy()
        for k in range(1, 40):  # terms k!/x^{k+1}; below 1e-80 relative by k = 40 at x > 500
            term = term * (k / x)
            total += term
        out[~small] = total
    return out


def product_norm_k2_balanced(t, f_tilde, rho0) -> np.ndarray:
    """K = 2 balanced closed form: P(t) = u/f~ with Ei(u) = 2 f~ t + Ei(f~ rho0^2).

    This is li(R) = 2 f~ t + li(R(0)) for R = e^{f~ P} (Poggio et al. 2018, Sec. 14, text after
    Eq. 57, whose 4 f~ t carries an extra factor K).  rho0 is the common initial norm of both
    layers.  The equation is solved in the log domain, F(u) = log(Ei(u) - Ei(u0)) - log(2 f~ t)
    = u + log(e^{-u} Ei(u) - e^{u0-u} e^{-u0} Ei(u0)) - log(2 f~ t) = 0, by Newton's method
    (F'(u) = e^u / (u (Ei(u) - Ei(u0))) ~ 1) safeguarded by bisection on a bracket, so every
    term stays O(u) for t up to ~1e300; the result is accurate to a few ulps of u.
    """
    times = _check_times(t, sorted_1d=False)
    f = _check_positive(f_tilde, "f_tilde")
    r0 = _check_positive(rho0, "rho0")
    u0 = f * r0 * r0
    flat = times.reshape(-1)
    pos = flat > 0
    log_b = np.full(flat.shape, -np.inf)
    log_b[pos] = math.log(2.0 * f) + np.log(flat[pos])  # log(2 f~ t)
    g0 = float(_scaled_ei(np.array([u0]))[0])

    def scaled_gap(u):  # D(u) = e^{-u} (Ei(u) - Ei(u0)) > 0 for u > u0
        return _scaled_ei(u) - np.exp(u0 - u) * g0

    def residual(u):  # F(u); -inf where rounding leaves D <= 0 (u just above u0)
        d = scaled_gap(u)
        out = np.full(u.shape, -np.inf)
        ok = d > 0
        out[ok] = (u[ok] - log_b[ok]) + np.log(d[ok])
        return out, d

    # Bracket (lo, hi] with F(lo) < 0 <= F(hi); lo = u0 is never evaluated.
    lo = np.full(flat.shape, u0)
    hi = np.maximum(u0, log_b) + 1.0
    for _ in range(64):
        bad = residual(hi)[0] < 0
        if not np.any(bad):
            break
        hi = np.where(bad, u0 + 2.0 * (hi - u0), hi)

    eps = np.finfo(np.float64).eps
    u = hi.copy()
    for _ in range(200):
        fu, d = residual(u)
        lo = np.where(fu < 0, u, lo)
        hi = np.where(fu >= 0, u, hi)
        new = 0.5 * (lo + hi)
        finite = np.isfinite(fu)
        newton = u[finite] - fu[finite] * u[finite] * d[finite]  # u - F / F'
        inside = (newton > lo[finite]) & (newton < hi[finite])
        new[finite] = np.where(inside, newton, new[finite])
        done = (np.abs(new - u) <= 8.0 * eps * new) | (hi - lo <= 8.0 * eps * hi)
        u = new
        if np.all(done | ~pos):
            break
    u = np.where(pos, u, u0)
    return (u / f).reshape(times.shape)


def product_norm_asymptotic(t, f_tilde, K: int) -> np.ndarray:
    """Leading-order P(t) ~ [log t + (2 - 2/K) log log t + log(K f~^{2/K})] / f~.

    From separating corrected Eq. 57 (see the module docstring); valid for any start as
    t -> infinity.  Returns NaN for t <= 1, where log log t is undefined.
    """
    times = _check_times(t, sorted_1d=False)
    f = _check_positive(f_tilde, "f_tilde")
    if isinstance(K, bool) or int(K) != K or K < 1:
        raise ValueError("K must be an integer >= 1")
    a = 2.0 - 2.0 / K
    out = np.full(times.shape, np.nan)
    ok = times > 1.0
    log_t = np.log(times[ok])
    out[ok] = (log_t + a * np.log(log_t) + math.log(K) + (2.0 / K) * math.log(f)) / f
    return out


def excess_over_log(t, product, f_tilde) -> np.ndarray:
    """f~ P(t) - log t: grows like (2 - 2/K) log log t for K > 1, tends to log f~^2 for K = 1.

    This is the "faster than logarithmic" growth of the product of the norms in Poggio et
    al. 2018, Sec. 14 and Figure 7 (left).  Requires t > 0.
    """
    times = np.asarray(t, dtype=np.float64)
    p = np.asarray(product, dtype=np.float64)
    f = _check_positive(f_tilde, "f_tilde")
    if not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise ValueError("t must be finite and > 0")
    return f * p - np.log(times)


# --------------------------------------------------------------------------- gradient descent


def gd_norm_growth(rho0, f_tilde, lr, num_steps, record_steps) -> NormGrowthSolution:
    """Forward Euler of Eq. 53' = gradient descent with step lr on the layer norms.

    rho_k <- rho_k + lr f~ (P / rho_k) e^{-f~ P}, i.e. GD on L(rho) = exp(-f~ prod_k rho_k)
    (Poggio et al. 2018, Eq. 48 with N = 1).  The step is computed as
    exp(log(lr f~) + log P - f~ P - log rho_k), so nothing under- or overflows.  (This is GD
    on the norms, not on the weight matrices, whose norms would pick up an extra O(lr^2)
    term.)

    Args:
        rho0: initial layer norms, shape (K,), all > 0.
        f_tilde: normalized output, > 0.
        lr: step size, > 0.
        num_steps: length of the run, integer >= 0 (steps after the last recorded one
            cannot change the output and are skipped).
        record_steps: non-decreasing integers in [0, num_steps] at which to record.

    Returns:
        NormGrowthSolution with t = lr * record_steps.
    """
    r = _check_rho0(rho0).copy()
    f = _check_positive(f_tilde, "f_tilde")
    lr = _check_positive(lr, "lr")
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 0:
        raise ValueError("num_steps must be an integer >= 0")
    num_steps = int(num_steps)
    rec = np.asarray(record_steps)
    if rec.ndim != 1 or rec.size == 0 or not np.all(np.mod(rec, 1) == 0):
        raise ValueError("record_steps must be a non-empty 1-D array of integers")
    rec = rec.astype(np.int64)
    if np.any(rec < 0) or np.any(rec > num_steps) or np.any(np.diff(rec) < 0):
        raise ValueError("record_steps must be sorted and within [0, num_steps]")

    log_lr_f = math.log(lr * f)
    rho_out = np.empty((rec.size, r.size))
    j = 0
    log_r = np.log(r)
    for n in range(int(rec[-1]) + 1):
        while j < rec.size and rec[j] == n:
            rho_out[j] = r
            j += 1
        if n == rec[-1]:
            break
        log_p = float(log_r.sum())
        r = r + np.exp(log_lr_f + log_p - f * math.exp(log_p) - log_r)
        log_r = np.log(r)
    product = np.exp(np.log(rho_out).sum(axis=1))
    return NormGrowthSolution(
        lr * rec.astype(np.float64), rho_out, product, -f * product, True,
        f"forward Euler, step {lr:g}, recorded up to step {int(rec[-1])} of {num_steps}",
    )
