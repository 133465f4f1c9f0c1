"""The exact fast-forward of GD on least squares equals explicit float64 stepping."""

import numpy as np
import pytest

from implicitlab.train.quadratic import QuadraticGD


def _problem(n, d, seed=0, rank=None):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    if rank is not None:  # rank-deficient: a product of thin factors
        A = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d)) / np.sqrt(rank)
    return A, rng.standard_normal(n), rng.standard_normal((3, d))


def _rel(a, b):
    return float(np.max(np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)))


@pytest.mark.parametrize("n,d,rank", [(9, 40, None), (30, 6, None), (12, 12, 5)])
@pytest.mark.parametrize("reduction,lr_frac", [("mean", 0.6), ("sum", 0.3), ("mean", 0.95)])
@pytest.mark.parametrize("k", [1, 7, 300, 2500])
def test_advance_equals_explicit_stepping(n, d, rank, reduction, lr_frac, k):
    A, b, w0 = _problem(n, d, rank=rank)
    scale = 1 / n if reduction == "mean" else 1.0
    lr = lr_frac * 2 / (2 * scale * np.linalg.norm(A, 2) ** 2)  # η λ_max = 2·lr_frac (< 2: stable)
    gd = QuadraticGD.least_squares(A, b, lr, reduction)
    assert gd.stable
    explicit = gd.step(w0, k)
    fast = gd.advance(w0, k)
    assert fast.dtype == np.float64 and fast.shape == w0.shape
    assert _rel(fast, explicit) < 1e-10, _rel(fast, explicit)


def test_oscillating_modes_and_single_vector():
    A, b, w0 = _problem(8, 20, seed=3)
    lr = 1.7 / (2 / 8 * np.linalg.norm(A, 2) ** 2)  # η λ_max = 1.7: the top mode flips sign every step
    gd = QuadraticGD.least_squares(A, b, lr)
    assert gd.contraction.min() < 0 and gd.stable
    for k in (1, 2, 3, 101):
        assert _rel(gd.advance(w0, k), gd.step(w0, k)) < 1e-10
    assert gd.advance(w0[0], 5).shape == (20,)  # a single (d,) vector in, (d,) out


def test_unstable_step_is_flagged_and_diverges_like_stepping():
    A, b, w0 = _problem(8, 20, seed=4)
    gd = QuadraticGD.least_squares(A, b, 2.2 / (2 / 8 * np.linalg.norm(A, 2) ** 2))
    assert not gd.stable
    assert _rel(gd.advance(w0, 30), gd.step(w0, 30)) < 1e-10
    with pytest.raises(ValueError, match="diverges"):
        gd.limit(w0)


def test_composition_null_space_and_limit():
    A, b, w0 = _problem(9, 40, seed=1)
    gd = QuadraticGD.least_squares(A, b, 0.5 / (2 / 9 * np.linalg.norm(A, 2) ** 2))
    assert _rel(gd.advance(gd.advance(w0, 1234), 8766), gd.advance(w0, 10_000)) < 1e-13
    far = gd.advance(w0, 10_000_000)
    # the null-space component never moves; the row space reaches the least-squares solution
    assert np.max(np.abs(gd.null_space_component(far) - gd.null_space_component(w0))) < 1e-13
    assert _rel(far, gd.limit(w0)) < 1e-13
    lstsq = np.linalg.lstsq(A, b, rcond=None)[0]  # min-norm: the limit from w0 = 0
    assert _rel(gd.limit(np.zeros((1, 40))), lstsq[None]) < 1e-12
    assert np.all(gd.loss(far) < 1e-25)


def test_slow_mode_keeps_relative_accuracy():
    # a mode with η λ = 1e-9: 1 − q^k must not lose digits to cancellation
    A = np.diag([1.0, 3e-5])
    b = np.array([1.0, 1.0])
    gd = QuadraticGD.least_squares(A, b, 0.5, "sum")  # h = 2·0.5·s² = s²
    w = gd.advance(np.zeros(2), 1000)
    expected = -np.expm1(1000 * np.log1p(-9e-10)) / 3e-5  # a(k) = (1 − q^k) β/s
    assert abs(w[1] - expected) / expected < 1e-13
    assert abs(gd.step(np.zeros(2), 1000)[1] - expected) / expected < 1e-10
