"""poggio2018-normalized-dynamics: config checks, the hidden-unit matching, the tiny preset end to end."""

import dataclasses

import numpy as np
import pytest
import torch

from implicitlab.config import ConfigError
from implicitlab.experiments.poggio2018.normalized_dynamics import (
    PRESETS,
    NormalizedDynamicsConfig,
    _linear_equilibrium_layers,
    aligned_distance,
    claims,
    run,
)
from implicitlab.train.normalized import eq52_matrix, sphere_equilibrium


@pytest.mark.parametrize("bad", [dict(depth=1), dict(inits=1), dict(levels=(5.0, 2.0)), dict(levels=()),
                                 dict(lr=0.0), dict(square_lr=float("nan")), dict(steps=0), dict(linear_equilibria=-1)])
def test_config_checks(bad):
    with pytest.raises(ConfigError):
        NormalizedDynamicsConfig(**bad)


def test_aligned_distance_ignores_hidden_unit_permutations_only():
    rng = np.random.default_rng(0)
    A = [rng.standard_normal((5, 3)), rng.standard_normal((5, 5)), rng.standard_normal((1, 5))]
    p1, p2 = rng.permutation(5), rng.permutation(5)
    B = [A[0][p1], A[1][p2][:, p1], A[2][:, p2]]  # the same function, hidden units relabelled
    assert aligned_distance(A, B) < 1e-12
    assert aligned_distance(A, B, permute=False) > 0.1
    C = [a + 0.1 * rng.standard_normal(a.shape) for a in A]
    assert aligned_distance(A, C) > 0.01


def test_linear_equilibrium_is_exact_and_has_the_rotation_orbit_as_zero_modes():
    """Deep linear net: the constructed point is an equilibrium of Eq. 49 to rounding, and Eq. 52 there has exactly
    (K − 1)(width − 1) zero eigenvalues (the rotations between layers), the rest negative."""
    from implicitlab.data import separable_through_origin

    Xn, yn = separable_through_origin(10, 3, seed=1)
    X, y = torch.tensor(Xn), torch.tensor(yn)
    g = torch.Generator().manual_seed(0)
    widths = (3, 4, 4, 1)
    V = [torch.randn(widths[k + 1], widths[k], generator=g, dtype=torch.float64) for k in range(3)]
    P = 20.0
    eq = sphere_equilibrium(P, _linear_equilibrium_layers(P, V, X, y, 200), X, y, max_steps=0, activation="linear")
    assert eq["residual"] < 1e-10
    ev = torch.linalg.eigvalsh(eq52_matrix(P, eq["V"], X, y, eq["lam_over_L"], "linear"))
    scale = float(ev.abs().max())
    assert int((ev.abs() <= 1e-8 * scale).sum()) == 2 * 3
    assert float(ev[ev.abs() > 1e-8 * scale].max()) < 0


@pytest.fixture(scope="module")
def tiny_table():
    return run(PRESETS["tiny"])


def test_tiny_table_records(tiny_table):
    t = tiny_table
    assert set(t.record) == {"trace", "distance", "hessian"}
    tr = t[t.record == "trace"]
    assert set(tr.method) == {"gd", "rho_v", "weight_norm"} and set(tr.loss) == {"exp", "square"}
    assert not tr.diverged.astype(bool).any()
    h = t[t.record == "hessian"]
    assert set(h.activation) == {"relu", "linear"} and (h.hessian_check < 1e-10).all()
    # (b) keeps ‖V_k‖ = 1 up to discretisation; gd has no V
    assert tr[tr.method == "gd"].unit_norm_drift.max() == 0
    assert 0 < tr[tr.method == "rho_v"].unit_norm_drift.max() < 0.2


def test_tiny_verdicts(tiny_table):
    """The tiny preset's verdicts (150 steps: too short for the asymptotic claims, which it reports as refuted)."""
    found = {c.name: c for c in claims(tiny_table)}
    expected = {
        "Eq. 48: ρ̇_k > 0 once the data are fitted": "holds",  # the square loss never fits in 100 steps: no control
        "Eq. 48: ρ̇_k → 0": "refuted",
        "same V_k at matched loss: (b) ρV vs (c) weight norm": "holds",
        "Eq. 52: negative definite at the λ > 0 equilibrium (ReLU network)": "no data",
        "Eq. 52: negative definite at the λ > 0 equilibrium (deep linear network, same widths)": "refuted",
        "Eq. 52 assembled = −Hessian of the penalised loss": "holds",
        "Lyu & Li: smoothed normalized margin non-decreasing after the fit": "holds",
    }
    got = {k: found[k].verdict for k in expected}
    assert got == expected
    for c in found.values():
        if c.kind == "prediction":
            assert c.control is not None or c.control_reason
        c.to_dict()  # serialisable
