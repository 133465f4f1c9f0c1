"""mc2024-lower-bound: the search's pieces against independent references, tiny verdicts, config validation,
and each claim refuted (or without data) where its statement is false."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import grad, jacrev, jvp

from implicitlab.config import ConfigError
from implicitlab.experiments.marion_chizat2024 import lower_bound as lb
from implicitlab.experiments.marion_chizat2024.common import make_problem
from implicitlab.references.deep_linear import deep_linear_minimizer_sharpness

TINY = lb.PRESETS["tiny"]


def verdicts(claims) -> dict[str, tuple[str, str | None]]:
    return {c.name: (c.verdict, c.control_verdict) for c in claims}


def by_name(claims):
    return {c.name: c for c in claims}


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    return lb.run(TINY)


@pytest.fixture(scope="module")
def net() -> lb.FlatDeepLinear:
    P = make_problem(50, 5, 3, 1.0, 0, torch.float64, torch.device("cpu"))
    return lb.FlatDeepLinear(P.X, P.y, P.w_star, 3)


def explicit_hessian(net: lb.FlatDeepLinear, theta: torch.Tensor) -> torch.Tensor:
    return torch.func.hessian(net.risk)(theta)


# ------------------------------------------------------------------------ the search's pieces


def test_curvature_along_and_its_gradient_match_torch_func(net):
    g = torch.Generator().manual_seed(1)
    theta = 0.6 * torch.randn(net.dim, generator=g, dtype=torch.float64)
    v = torch.randn(net.dim, generator=g, dtype=torch.float64)
    H = explicit_hessian(net, theta)
    assert float(net.curvature_along(theta, v)) == pytest.approx(float(v @ H @ v), rel=1e-12)

    def reference(t):  # the third derivative, contracted twice with v, through torch.func
        return jvp(lambda u: jvp(net.risk, (u,), (v,))[1], (t,), (v,))[1]

    torch.testing.assert_close(net.sharpness_gradient(theta, v), grad(reference)(theta), rtol=1e-11, atol=1e-11)


def test_sharpness_gradient_is_the_derivative_of_lambda_max(net):
    """Hellmann–Feynman: at a simple top eigenvalue, the directional derivative of eigvalsh(H)[-1]."""
    g = torch.Generator().manual_seed(2)
    theta = net.retract(0.5 * torch.randn(net.dim, generator=g, dtype=torch.float64))
    evals, evecs = torch.linalg.eigh(explicit_hessian(net, theta))
    assert float(evals[-1] - evals[-2]) > 1e-3 * float(evals[-1])  # simple
    direction = torch.randn(net.dim, generator=g, dtype=torch.float64)
    h = 1e-6
    top = lambda t: float(torch.linalg.eigvalsh(explicit_hessian(net, t))[-1])  # noqa: E731
    fd = (top(theta + h * direction) - top(theta - h * direction)) / (2 * h)
    assert float(net.sharpness_gradient(theta, evecs[:, -1]) @ direction) == pytest.approx(fd, rel=1e-6)


def test_jacobian_retraction_and_tangent(net):
    g = torch.Generator().manual_seed(3)
    theta = 0.5 * torch.randn(net.dim, generator=g, dtype=torch.float64)
    torch.testing.assert_close(net.jacobian(theta), jacrev(net.end_to_end)(theta), rtol=1e-12, atol=1e-12)
    on = net.retract(theta)
    assert float(torch.linalg.vector_norm(net.end_to_end(on) - net.w_star)) <= 1e-14
    w_ls = torch.linalg.lstsq(net.X, net.y.unsqueeze(1)).solution[:, 0]
    assert float(net.risk(on)) == pytest.approx(float((net.X @ w_ls - net.y).square().mean()), rel=1e-13)
    t = net.tangent(on, torch.randn(net.dim, generator=g, dtype=torch.float64))
    assert float(torch.linalg.vector_norm(net.jacobian(on) @ t)) <= 1e-12 * float(torch.linalg.vector_norm(t))


def test_certified_sharpness_equals_the_explicit_hessian(net):
    g = torch.Generator().manual_seed(4)
    theta = net.retract(0.5 * torch.randn(net.dim, generator=g, dtype=torch.float64))
    s, v, r = net.sharpness_tracker(theta, 1e-10)(theta)
    exact = float(torch.linalg.eigvalsh(explicit_hessian(net, theta))[-1])
    assert s == pytest.approx(exact, rel=1e-9)
    assert s == pytest.approx(deep_linear_minimizer_sharpness(net.layers(theta), net.X), rel=1e-9)
    assert r <= 1e-10 * s


def descend(net, theta, *, steps, step0, tol, constrained):
    """The search one start at a time, the reference for ``lb.descend_batched``: the sharpness from a
    :class:`~implicitlab.diagnostics.SharpnessTracker` on the start's own module (another Lanczos code
    path than the batched search's ``ensemble_sharpness``).

    A tried step is kept if S decreased (then α ← 1.5α), else α ← α/2. Returns the last kept θ,
    the kept S after every tried step (the start first), and the residual at the last kept θ.
    """
    measure = net.sharpness_tracker(theta, tol)
    s, v, r = measure(theta)
    alpha = step0 / max(s, 1e-12)
    path = [s]
    for _ in range(steps):
        g = net.sharpness_gradient(theta, v)
        if constrained:
            g = net.tangent(theta, g)
        candidate = theta - alpha * g
        if constrained:
            candidate = net.retract(candidate)
        s_new, v_new, r_new = measure(candidate)
        if np.isfinite(s_new) and s_new < s:
            theta, s, v, r = candidate, s_new, v_new, r_new
            alpha *= 1.5
        else:
            alpha *= 0.5
        path.append(s)
    return theta, path, r


def test_the_constrained_search_descends_and_stays_on_the_minimizers(net):
    g = torch.Generator().manual_seed(5)
    theta0 = net.retract(0.5 * torch.randn(net.dim, generator=g, dtype=torch.float64))
    theta, path, _ = descend(net, theta0, steps=15, step0=0.01, tol=1e-10, constrained=True)
    assert path[-1] < path[0] and all(b <= a for a, b in zip(path, path[1:]))
    assert float(torch.linalg.vector_norm(net.end_to_end(theta) - net.w_star)) <= 1e-14


def test_the_batched_search_is_each_start_searched_alone(net):
    """run() searches all starts of a depth at once: each start's path, end point and residual must be
    those of :func:`descend` on that start alone (to the eigen-solver's tolerance), for both searches."""
    g = torch.Generator().manual_seed(6)
    raw = 0.5 * torch.randn(3, net.dim, generator=g, dtype=torch.float64)
    theta0 = net.retract_batched(raw)
    for b in range(3):
        alone = net.retract(raw[b])
        torch.testing.assert_close(theta0[b], alone, rtol=0, atol=1e-13)
    for constrained in (True, False):
        thetas, paths, res = lb.descend_batched(net, theta0, steps=12, step0=0.01, tol=1e-10, constrained=constrained)
        assert paths.shape == (3, 13)
        for b in range(3):
            theta, path, r = descend(net, theta0[b], steps=12, step0=0.01, tol=1e-10, constrained=constrained)
            assert paths[b] == pytest.approx(np.asarray(path), rel=1e-9)
            torch.testing.assert_close(thetas[b], theta, rtol=1e-7, atol=1e-9)
            assert float(res[b]) <= 1e-10 * path[-1] and r <= 1e-10 * path[-1]
        assert not np.allclose(paths[0], paths[1])  # the starts differ: a mix-up would show


# ------------------------------------------------------------------------ tiny preset, claims


def test_tiny_verdicts(tiny):
    assert verdicts(lb.claims(tiny)) == {
        "no minimizer flatter than S_min (adversarial search)": ("holds", "refuted"),
        "search end points are certified minimizers": ("holds", None),
        # 12 steps from 2 starts do not get close: the observation is refuted at the tiny preset
        "the search gets within the digest's 1.03× of S_min": ("refuted", None),
        "rank-one aligned minimizer is sharper than S_min (u no eigenvector)": ("holds", None),
        "rank-one aligned minimizer attains S_min when w* is the top eigenvector": ("holds", None),
        "closed forms equal the certified sharpness": ("holds", None),
        "minimizers are arbitrarily sharp: S grows like c²": ("holds", None),
    }
    kinds = {c.name: c.kind for c in lb.claims(tiny)}
    assert kinds["no minimizer flatter than S_min (adversarial search)"] == "prediction"
    assert kinds["minimizers are arbitrarily sharp: S grows like c²"] == "identity"


def test_floor_refuted_on_points_off_the_minimizers(tiny):
    """The control setting as the measured one: the unconstrained search's end points are below S_min."""
    t = tiny.copy()
    search, control = t.part == "search", t.part == "control"
    t.loc[search, "part"], t.loc[control, "part"] = "control", "search"
    c = by_name(lb.claims(t))["no minimizer flatter than S_min (adversarial search)"]
    assert c.verdict == "refuted" and c.measured < 1


def test_rescaling_claim_refuted_when_s_grows_like_c(tiny):
    t = tiny.copy()
    rows = t.part == "rescale"
    t.loc[rows, "sharpness"] = t.loc[rows, "sharpness"] / t.loc[rows, "c"]  # S ∝ c instead of c²
    assert by_name(lb.claims(t))["minimizers are arbitrarily sharp: S grows like c²"].verdict == "refuted"


def test_attained_claim_refuted_on_the_generic_draw(tiny):
    t = tiny[tiny.part != "rank_one_eigen"].copy()
    t.loc[t.part == "rank_one", "part"] = "rank_one_eigen"  # u is no eigenvector there: S₁ > S_min
    c = by_name(lb.claims(t))["rank-one aligned minimizer attains S_min when w* is the top eigenvector"]
    assert c.verdict == "refuted"


def test_claims_say_no_data_without_searches(tiny):
    t = tiny[~tiny.part.isin(["search", "control"])]
    c = by_name(lb.claims(t))
    for name in ("no minimizer flatter than S_min (adversarial search)", "search end points are certified minimizers"):
        assert c[name].verdict == "no data" and c[name].to_dict()["no_data_reason"]


def test_table_shape(tiny):
    assert set(tiny.part) == {"search", "control", "rank_one", "rank_one_eigen", "rescale"}
    ends = tiny[tiny.part == "search"].groupby("start").step.max()
    assert (ends == TINY.search_steps).all()
    assert sorted(tiny[tiny.part == "rescale"].c) == sorted(TINY.rescale_factors)


# ------------------------------------------------------------------------ config


@pytest.mark.parametrize("change, match", [
    ({"n": 3, "d": 5}, "n ≥ d"),
    ({"depths": (1,)}, "depths"),
    ({"depths": ()}, "depths"),
    ({"starts": 0}, "starts"),
    ({"start_scale": 0.0}, "start_scale"),
    ({"sharpness_tol": 0.1}, "sharpness_tol"),
    ({"rescale_factors": (1.0, 10.0)}, "fit_from"),
    ({"rescale_factors": (-1.0, 100.0, 1000.0)}, "rescale_factors"),
    ({"dtype": "float32"}, "float64"),
])
def test_config_validation(change, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(TINY, **change)


def test_presets_are_valid_and_ordered():
    assert set(lb.PRESETS) == {"tiny", "quick", "full"}
    assert lb.PRESETS["tiny"].starts <= lb.PRESETS["quick"].starts <= lb.PRESETS["full"].starts
    assert np.isfinite(lb.FLOOR_TOL) and lb.FLOOR_TOL < 1e-6


def test_threshold_table_has_sources():
    table = lb.EXPERIMENT.thresholds
    assert table
    for name, t in table.items():
        assert t.source.split(":")[0].split(",")[0] in ("paper", "exact", "ours"), (name, t.source)


def test_end_point_certification_returns_lambda_max(net):
    """certify_top (k = 2, fresh start) equals the explicit Hessian's top eigenvalue to 1e-10, start by start."""
    g = torch.Generator().manual_seed(7)
    thetas = net.retract_batched(0.5 * torch.randn(3, net.dim, generator=g, dtype=torch.float64))
    values, residuals = net.certify_top(thetas, 1e-10)
    for b in range(3):
        exact = float(torch.linalg.eigvalsh(explicit_hessian(net, thetas[b]))[-1])
        assert float(values[b]) == pytest.approx(exact, rel=1e-10)
        assert float(residuals[b]) <= 1e-10 * exact
