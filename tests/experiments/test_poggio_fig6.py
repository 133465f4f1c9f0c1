"""poggio2018-fig6: the high-precision min-norm solver against independent solves; the tiny preset."""

import numpy as np
import pytest
from mpmath import mp

from implicitlab.data.synthetic import chebyshev_nodes, polynomial_features, sine_target
from implicitlab.experiments.poggio2018.fig6 import PRESETS, claims, exact_min_norm, run
from implicitlab.references import min_norm_solution

N = 10


def _x(m):
    return sorted(m.cos((2 * k - 1) * m.pi / (2 * N)) for k in range(1, N + 1))


def _y(m):
    return [m.sin(8 * m.pi * v) for v in _x(m)]


def _t(m):
    return [m.mpf(-1) + m.mpf(i) / 10 for i in range(21)]


@pytest.mark.parametrize("p", [4, 10, 16])
def test_exact_min_norm_vs_independent_high_precision_pinv(p):
    # independent: w = Φᵀ(ΦΦᵀ)⁻¹y (p ≥ n) or (ΦᵀΦ)⁻¹Φᵀy (p < n) with mpmath's LU at 80 digits
    res = exact_min_norm(_x, _y, _t, p, dps=60)
    old = mp.dps
    mp.dps = 80
    try:
        x, y, t = _x(mp), _y(mp), _t(mp)
        Phi = mp.matrix([[v**j for j in range(p)] for v in x])
        if p >= N:
            w = Phi.T * mp.lu_solve(Phi * Phi.T, mp.matrix(y))
        else:
            w = mp.lu_solve(Phi.T * Phi, Phi.T * mp.matrix(y))
        ref = [mp.fsum(w[j] * v**j for j in range(p)) for v in t]
        err = max(abs(a - b) for a, b in zip(res["eval"], ref))
        assert err < mp.mpf(10) ** -30, err
        assert abs(res["w_norm2"] - mp.fsum(w[j] ** 2 for j in range(p))) < mp.mpf(10) ** -30
    finally:
        mp.dps = old


def test_float64_pinv_agrees_with_exact_where_well_conditioned():
    p = 6  # cond(Φ) ≈ 1e2: float64 is exact to rounding
    x = chebyshev_nodes(N)
    mn = min_norm_solution(polynomial_features(x, p), sine_target(x))
    t = np.array([float(v) for v in _t(mp)])
    pred64 = polynomial_features(t, p) @ mn.solution
    exact = exact_min_norm(_x, _y, _t, p, dps=40)
    assert np.max(np.abs(pred64 - np.array([float(v) for v in exact["eval"]]))) < 1e-12


def test_cond_lower_bound_is_a_lower_bound():
    p = 8  # cond small enough for float64's SVD to be exact
    x = chebyshev_nodes(N)
    s = np.linalg.svd(polynomial_features(x, p), compute_uv=False)
    lb = exact_min_norm(_x, _y, _t, p, dps=40)["cond_lower_bound"]
    assert lb <= s[0] / s[-1] * (1 + 1e-10) and lb > 0.5 * s[0] / s[-1]


def test_tiny_preset_claims():
    table = run(PRESETS["tiny"])
    found = {c.name: c for c in claims(table)}
    assert found["the high-precision reference is certified"].verdict == "holds"
    assert found["monomial_exact: the computed solution interpolates (p ≥ n)"].verdict == "holds"
    assert found["chebyshev: the computed solution interpolates (p ≥ n)"].verdict == "holds"
    loss = table[table.section == "loss"]
    assert set(loss.method) == {"monomial_exact", "monomial_float64", "chebyshev", "legendre"}
    assert (loss[loss.method == "chebyshev"].condition < 10).all()
