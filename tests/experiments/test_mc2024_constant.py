"""mc2024-constant: config validation, the per-run losses, gradients and Hessians against explicit float64
references, the closed form at an exact minimizer, the constants against an independent computation, the
η-halving measurement, and the tiny preset end to end with its verdicts."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from implicitlab.config import ConfigError
from implicitlab.data.synthetic import conditioned_regression
from implicitlab.experiments.marion_chizat2024 import constant as C
from implicitlab.models import Architecture
from implicitlab.references.deep_linear import deep_linear_minimizer_sharpness
from implicitlab.train.linear_grad import linear_chain_gradients

TINY = C.PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny_table():
    return C.run(TINY)


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(("change", "message"), [
    (dict(kappas=(0.5, 2.0)), "kappas must be finite and ≥ 1"),
    (dict(kappas=(3.0, 3.0)), "kappas must be distinct"),
    (dict(n=4, d=5), "need n ≥ d ≥ 2"),
    (dict(seeds=0), "seeds must be ≥ 1"),
    (dict(width_factors=(0,)), "width_factors must be integers ≥ 1"),
    (dict(residual_depths=(1,)), "residual_depths must be integers ≥ 2"),
    (dict(residual_depths=(), small_depths=()), "no architecture"),
    (dict(step=1.0), "step h must lie in"),
    (dict(large_scale=0.1), "large_scale must exceed small_scale"),
    (dict(converged_tol=0.0), "converged_tol must be positive"),
    (dict(dtype="float8"), "unknown dtype"),
])
def test_config_refuses_bad_values(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY, **change)


def test_presets_and_memory_estimate():
    assert set(C.PRESETS) == {"tiny", "quick", "full"}
    full = C.PRESETS["full"]
    assert full.kappas == (1.0, 3.0, 10.0, 30.0) and full.residual_depths == (5, 10, 20, 40)
    assert [f * full.d for f in full.width_factors] == [5, 10, 20]
    assert 0 < TINY.estimate_bytes() < full.estimate_bytes() < 2**31
    # halving doubles the runs of an ensemble
    assert full.num_runs(40) == 2 * len(full.kappas) * full.seeds


# ------------------------------------------------------------------------------------ per-run algebra


def _per_run_problem(R=3, n=12, d=3, seed=0):
    X = torch.stack([torch.tensor(conditioned_regression(n, d, k, seed=seed + r)["X"]) for r, k in
                     enumerate([1.0, 4.0, 20.0][:R])])
    y = torch.stack([torch.tensor(conditioned_regression(n, d, k, seed=seed + r)["y"]) for r, k in
                     enumerate([1.0, 4.0, 20.0][:R])])
    return X, y


def _direct_loss(weights, head, X, y):
    """(1/n)‖y − f(X)‖² per run from the outputs, no sufficient statistics."""
    h = X
    for W in weights:
        h = h @ W.transpose(-1, -2)
    if head is not None:
        h = h @ head.transpose(-1, -2)
    return ((h[..., 0] - y) ** 2).mean(-1)


@pytest.mark.parametrize("residual", [False, True])
def test_per_run_statistics_loss_and_gradients_match_autograd_of_the_outputs(residual):
    X, y = _per_run_problem()
    R, d, m, L = X.shape[0], X.shape[2], 5, 3
    g = torch.Generator().manual_seed(1)
    if residual:
        per = [C.residual_init(d, m, L, 0.7, s) for s in range(R)]
        weights = [torch.stack([w[k] for w, _ in per]) for k in range(L)]
        head = torch.stack([h for _, h in per])
    else:
        dims = [d, m, m, 1]
        weights = [torch.randn(R, dims[k + 1], dims[k], generator=g, dtype=torch.float64) * 0.5 for k in range(L)]
        head = None
    stats = C.PerRunSquareStats(X, y)
    P = C.end_to_end(weights, head)
    torch.testing.assert_close(stats.loss(P), _direct_loss(weights, head, X, y), rtol=1e-12, atol=1e-13)
    value, grads = linear_chain_gradients(weights, head, X, y, "square", "mean", False, stats)
    params = [w.clone().requires_grad_(True) for w in weights]
    ref = torch.autograd.grad(_direct_loss(params, head, X, y).sum(), params)
    for g_ours, g_ref in zip(grads, ref):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-11, atol=1e-12)


def test_per_run_hessian_matches_torch_func_hessian_and_its_top_eigenvalue():
    X, y = _per_run_problem()
    R, d, L = X.shape[0], X.shape[2], 3
    g = torch.Generator().manual_seed(2)
    dims = [d, 4, 4, 1]
    weights = [0.6 * torch.randn(R, dims[k + 1], dims[k], generator=g, dtype=torch.float64) for k in range(L)]
    stats = C.PerRunSquareStats(X, y)
    H = C.PerRunHessian(weights, None, stats)
    V = torch.randn(R, H.D, generator=g, dtype=torch.float64)
    HV = H @ V
    tops = []
    for r in range(R):
        shapes = [w.shape[1:] for w in weights]

        def f(flat, r=r):
            parts = torch.split(flat, [int(torch.Size(s).numel()) for s in shapes])
            ws = [p.reshape(s).unsqueeze(0) for p, s in zip(parts, shapes)]
            return _direct_loss(ws, None, X[r:r + 1], y[r:r + 1])[0]

        flat = torch.cat([w[r].reshape(-1) for w in weights])
        dense = torch.func.hessian(f)(flat)  # explicit float64 Hessian of run r alone
        torch.testing.assert_close(HV[r], dense @ V[r], rtol=1e-10, atol=1e-11)
        tops.append(float(torch.linalg.eigvalsh(dense)[-1]))
    from implicitlab.models import Ensemble

    ens = Ensemble(Architecture("deep_linear", d_in=d, depth=L, width=4), weights)
    values, residuals, certified = C.per_run_sharpness(ens, stats, tol=1e-10, max_matvecs=60, seed=0,
                                                       chunk_bytes=1)  # chunk_bytes=1: one run per chunk
    assert certified.all()
    np.testing.assert_allclose(values, tops, rtol=1e-8)
    assert (residuals <= 1e-10 * values).all()


@pytest.mark.parametrize("residual", [False, True])
def test_minimizer_sharpness_matches_the_reference_and_the_explicit_hessian_at_an_exact_minimizer(residual):
    """Make an exact minimizer (last layer solved for P = w*ᵀ) and compare the batched closed form with
    ``deep_linear_minimizer_sharpness`` (plain) and with the explicit Hessian's top eigenvalue (both)."""
    from implicitlab.models import Ensemble

    n, d, m, L = 15, 3, 4, 3
    data = conditioned_regression(n, d, 5.0, seed=3)
    X, y = torch.tensor(data["X"]).unsqueeze(0), torch.tensor(data["y"]).unsqueeze(0)
    w_star = torch.tensor(data["w_star"])
    if residual:
        ws, head = C.residual_init(d, m, L, 1.0, 7)
        B = ws[1] @ ws[0]  # (m, d) = W_2 W_1
        h = head[0]
        correction = torch.outer(h, w_star - h @ ws[2] @ B) @ torch.linalg.pinv(B)  # hᵀ W_3 B = w*ᵀ
        ws[2] = ws[2] + correction
        head_b = head.unsqueeze(0)
    else:
        g = torch.Generator().manual_seed(4)
        ws = [0.8 * torch.randn(m, d, generator=g, dtype=torch.float64),
              0.8 * torch.randn(m, m, generator=g, dtype=torch.float64), None]
        B = ws[1] @ ws[0]
        ws[2] = (w_star @ torch.linalg.pinv(B)).unsqueeze(0)  # (1, m): W_3 B = w*ᵀ
        head_b = None
    weights = [w.unsqueeze(0) for w in ws]
    torch.testing.assert_close(C.end_to_end(weights, head_b)[0, 0], w_star, rtol=0, atol=1e-12)
    arch = Architecture("deep_linear", d_in=d, depth=L, width=m, d_out=m if residual else 1)
    ens = Ensemble(arch, weights, head_b)
    stats = C.PerRunSquareStats(X, y)
    closed = float(C.minimizer_sharpness(ens, stats)[0])
    if not residual:
        assert closed == pytest.approx(deep_linear_minimizer_sharpness(ws, data["X"]), rel=1e-12)
    shapes = [w.shape for w in ws]

    def f(flat):
        parts = torch.split(flat, [int(torch.Size(s).numel()) for s in shapes])
        return _direct_loss([p.reshape(s).unsqueeze(0) for p, s in zip(parts, shapes)], head_b, X, y)[0]

    dense = torch.func.hessian(f)(torch.cat([w.reshape(-1) for w in ws]))
    assert closed == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-10)


def test_residual_init_at_width_d_is_the_packaged_residual_architecture():
    d, L, s, seed = 4, 5, 0.8, 123
    ours, head = C.residual_init(d, d, L, s, seed)
    ref, ref_head = Architecture("residual", d_in=d, depth=L).init(s, seed)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(head, ref_head, rtol=0, atol=0)
    wide, wide_head = C.residual_init(d, 3 * d, L, 0.0, seed)  # s = 0: the embedding and identities exactly
    torch.testing.assert_close(wide[0], torch.eye(3 * d, d, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(wide[1], torch.eye(3 * d, dtype=torch.float64), rtol=0, atol=0)
    assert wide_head.shape == (1, 3 * d) and float(wide_head.norm()) == pytest.approx(1.0, abs=1e-15)


# ------------------------------------------------------------------------------------ tiny, end to end


def test_constants_match_an_independent_computation(tiny_table):
    """S_min = 2La (‖w*‖ = 1), Λ = 1 and 4Λ/a from the generator's own eigen-decomposition, not from Σ."""
    for (kappa, j), g in tiny_table.groupby(["kappa", "data_index"]):
        from implicitlab.seeds import derive_seed

        data = conditioned_regression(TINY.n, TINY.d, kappa, noise=TINY.noise, seed=derive_seed(TINY.seed, "data", j))
        coords = data["eigenvectors"].T @ data["w_star"]  # w* in Σ's eigenbasis
        a = float((data["eigenvalues"] * coords**2).sum() / (coords**2).sum())
        np.testing.assert_allclose(g.a, a, rtol=1e-12)
        np.testing.assert_allclose(g.lambda_max, 1.0, rtol=1e-12)
        np.testing.assert_allclose(g.kappa_measured, kappa, rtol=1e-12)
        np.testing.assert_allclose(g.s_min, 2 * g.depth * a, rtol=1e-12)
        np.testing.assert_allclose(g.bound, 4.0 / a, rtol=1e-12)
        np.testing.assert_allclose(g.upper_line, 8.0 * g.depth, rtol=1e-12)
        np.testing.assert_allclose(g.ratio / g.bound, g.upper_ratio, rtol=1e-12)


def test_tiny_runs_every_cell_and_the_halved_runs_pair_with_the_same_initialisation(tiny_table):
    t = tiny_table
    archs = TINY.architectures()
    assert t.groupby(["family", "depth", "width"]).ngroups == len(archs)
    assert len(t) == sum(TINY.num_runs(L) for _, L, _ in archs)
    half = t[t.step_factor == 0.5].merge(t[t.step_factor == 1.0], on=["family", "depth", "width", "kappa",
                                                                      "data_index"], suffixes=("_h", ""))
    assert len(half) == len(t[t.step_factor == 0.5]) > 0
    np.testing.assert_array_equal(half.seed_h, half.seed)  # same initialisation
    np.testing.assert_allclose(half.lr_h, half.lr / 2, rtol=1e-15)  # only η differs
    main = t[t.family != "large"]
    assert main.included.all()  # tiny's main runs all converge with a certified S


def test_tiny_verdicts(tiny_table):
    claims = {c.name: c for c in C.claims(tiny_table)}
    expected = {
        "small init: S ≤ 8LΛ (S/S_min ≤ 4Λ/a)": "holds",
        "residual init: S ≤ 8LΛ (S/S_min ≤ 4Λ/a)": "holds",
        "small init: S/S_min grows with κ": "holds",
        "residual init: S/S_min grows with κ": "holds",
        "halving η changes the final S by < 2.5%": "holds",
        "Lanczos S = closed form at the minimizer": "holds",
        # tiny (L ∈ {2, 3}, d = 3) is far from the asymptotics: the spread exceeds the margin there
        "small init: at fixed κ, S/S_min does not depend on depth": "refuted",
        "small init: at fixed κ, S/S_min does not depend on width": "refuted",
        "residual init: at fixed κ, S/S_min does not depend on width": "refuted",
    }
    for name, verdict in expected.items():
        assert claims[name].verdict == verdict, (name, claims[name].measured)
    # the controls could fail the predictions: large init exceeds 8LΛ, and the spread across init scale the margin
    assert claims["small init: S ≤ 8LΛ (S/S_min ≤ 4Λ/a)"].control.measured > 1.0
    assert claims["small init: at fixed κ, S/S_min does not depend on width"].control.measured > C.SPREAD_MARGIN
    assert all(c.kind != "prediction" or c.control is not None or c.control_reason for c in claims.values())


def test_halving_measurement_is_the_relative_change_of_paired_runs(tiny_table):
    t = tiny_table
    claim = next(c for c in C.claims(t) if c.name.startswith("halving"))
    pairs = []
    for _, g in t.groupby(["family", "depth", "width", "kappa", "data_index"]):
        if len(g) == 2 and g.included.all():
            s1, s2 = float(g[g.step_factor == 1.0].sharpness.iloc[0]), float(g[g.step_factor == 0.5].sharpness.iloc[0])
            pairs.append(abs(s1 - s2) / s2)
    assert claim.measured == pytest.approx(max(pairs), rel=1e-12) and claim.seeds == len(pairs)


def test_halving_measures_the_step_effect_that_shrinks_with_the_step():
    """GD's limit moves with η like O(η): the measured change at step h is about twice the one at h/2."""
    cfg = dataclasses.replace(TINY, residual_depths=(), small_depths=(2,), width_factors=(1,), halve_depths=(2,),
                              kappas=(10.0,), seeds=2)
    data = C.make_data(cfg)
    changes = []
    for h in (0.4, 0.2):
        t = C.train_architecture(dataclasses.replace(cfg, step=h), "small", 2, 3, data, torch.device("cpu"))
        assert t.included.all()
        s1, s2 = t[t.step_factor == 1.0].sharpness.to_numpy(), t[t.step_factor == 0.5].sharpness.to_numpy()
        changes.append(np.abs(s1 - s2) / s2)
    ratio = changes[0] / changes[1]
    assert np.all((ratio > 1.4) & (ratio < 2.8)), ratio


def test_excluded_runs_are_counted_and_no_runs_give_no_data(tiny_table):
    t = tiny_table.copy()
    t.loc[t.index[0], ["converged", "included"]] = False
    first = next(c for c in C.claims(t) if c.name.startswith(t.family.iloc[0]))
    assert "not within ‖w_e − w*‖² ≤ tol" in first.basis and "of" in first.basis
    none = tiny_table.assign(included=False, converged=False)
    verdicts = {c.name: c.verdict for c in C.claims(none)}
    assert set(verdicts.values()) == {"no data"}, verdicts


def test_diverged_runs_are_recorded_not_raised(monkeypatch):
    """A step far above 2/S (forced by hiding the initial sharpness from the step rule) makes the run's
    weights overflow: it is recorded as diverged with NaN sharpness, excluded, and nothing raises."""
    cfg = dataclasses.replace(TINY, residual_depths=(), small_depths=(2,), width_factors=(1,), halve_depths=(),
                              kappas=(10.0,), seeds=1, large_scale=30.0, control_max_steps=300)
    real = C.per_run_sharpness
    calls = []

    def blind_at_init(ens, stats, **kw):
        calls.append(1)
        values, residuals, ok = real(ens, stats, **kw)
        return (np.zeros_like(values), residuals, ok) if len(calls) == 1 else (values, residuals, ok)

    monkeypatch.setattr(C, "per_run_sharpness", blind_at_init)
    t = C.train_architecture(cfg, "large", 2, 3, C.make_data(cfg), torch.device("cpu"))
    assert len(t) == 1 and bool(t.diverged.iloc[0]) and not bool(t.included.iloc[0])
    assert math.isnan(float(t.sharpness.iloc[0])) and not bool(t.sharpness_converged.iloc[0])
    assert int(t.steps.iloc[0]) < 300  # a non-finite run does not hold the ensemble up
