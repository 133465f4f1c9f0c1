"""Perturbations: the paper's schedule, perturbed GD on the fast-forward vs explicit stepping (numpy and
the package's torch GD), the exact law of perturbed GD vs brute force and Monte Carlo, and the
relative perturbation of an nn.Module (Fig. 5).

Tolerances (float64):
    STEP = 1e-10   relative, fast-forward vs explicit stepping over ≤ 1000 steps (rounding accumulated
                   by the explicit steps, with margin)
    LAW = 1e-10    relative, the moments vs the covariance built from explicit linear maps
    Monte Carlo: the sample mean over runs within 4 of its exact SDs
"""

import numpy as np
import pytest
import torch

from implicitlab.models import Architecture, Ensemble
from implicitlab.train import gradient_descent
from implicitlab.train.perturb import (
    PerturbationSchedule,
    gaussian_perturbations,
    perturb_parameters_,
    perturbed_gd,
    perturbed_gd_moments,
)
from implicitlab.train.quadratic import QuadraticGD

STEP = 1e-10
LAW = 1e-10


def _problem(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal((3, d))


def _rel(a, b):
    return float(np.max(np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)))


def _gd(n=9, d=40, seed=2, frac=0.9):
    A, b, w0 = _problem(n, d, seed=seed)
    return QuadraticGD.least_squares(A, b, frac / (2 / n * np.linalg.norm(A, 2) ** 2)), w0


# --------------------------------------------------------------------------- schedule and perturbed GD


def test_schedule_of_the_paper():
    s = PerturbationSchedule(every=120_000, until=5_000_000, std=0.45)
    steps = s.steps(10_000_000)
    assert len(steps) == 41 and steps[0] == 120_000 and steps[-1] == 4_920_000
    assert PerturbationSchedule(5, None, 1.0).steps(20).tolist() == [5, 10, 15, 20]
    noise = gaussian_perturbations(s, 10_000_000, seeds=[1, 2], dim=4)
    assert noise.shape == (41, 2, 4)
    # a run's noise does not depend on the other runs
    assert np.array_equal(gaussian_perturbations(s, 10_000_000, seeds=[2], dim=4)[:, 0], noise[:, 1])
    with pytest.raises(ValueError):
        PerturbationSchedule(every=0, until=10, std=1.0)


def test_perturbed_fast_forward_equals_explicit():
    gd, w0 = _gd()
    sched = PerturbationSchedule(every=150, until=600, std=0.45)
    kicks = sched.steps(1000)
    noise = gaussian_perturbations(sched, 1000, seeds=[0, 1, 2], dim=40)
    probes = [0, 10, 149, 150, 151, 400, 999]
    fast_tab, fast_w = perturbed_gd(gd, w0, 1000, probes, kicks, noise)
    slow_tab, slow_w = perturbed_gd(gd, w0, 1000, probes, kicks, noise, explicit=True)
    assert _rel(fast_w, slow_w) < STEP
    assert np.allclose(fast_tab.loss, slow_tab.loss, rtol=1e-8, atol=1e-20)
    # both the end of a phase and the jump are recorded at a perturbation step
    at150 = fast_tab[fast_tab.step == 150]
    assert sorted(at150.after_perturbation.unique().tolist()) == [False, True]
    assert (at150[at150.after_perturbation].num_perturbations == 1).all()
    assert fast_tab.num_perturbations.max() == len(kicks)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fast_forward_equals_the_packages_gradient_descent(reduction):
    # poggio2018-fig4's self-check as a test: two runs of the torch GD (a depth-1 linear ensemble on
    # the square loss), one perturbation half-way, against perturbed_gd on the fast-forward
    A, b, _ = _problem(9, 40, seed=5)
    scale = 1 / 9 if reduction == "mean" else 1.0
    lr = 0.9 / (2 * scale * np.linalg.norm(A, 2) ** 2)
    gd = QuadraticGD.least_squares(A, b, lr, reduction)
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal((2, 40)) / np.sqrt(120)
    kick = 0.45 * rng.standard_normal((1, 2, 40))
    num_steps, k1 = 600, 300
    _, w_ff = perturbed_gd(gd, w0, num_steps, [], np.array([k1]), kick)

    X, y = torch.tensor(A), torch.tensor(b)
    ens = Ensemble(Architecture("deep_linear", d_in=40, depth=1), [torch.tensor(w0[:, None, :])])
    gradient_descent(ens, "square", X, y, lr=lr, num_steps=k1, reduction=reduction, probe_steps=[])
    with torch.no_grad():
        ens.weights[0].add_(torch.tensor(kick[0][:, None, :]))
    gradient_descent(ens, "square", X, y, lr=lr, num_steps=num_steps - k1, reduction=reduction, probe_steps=[])
    w_gd = ens.weights[0].detach().numpy()[:, 0, :]
    assert _rel(w_ff, w_gd) < STEP, _rel(w_ff, w_gd)


# --------------------------------------------------------------------------- the exact law


def _linear_map(gd: QuadraticGD, k: int) -> np.ndarray:
    """M_k (d, d): the linear part of k GD steps, from the fast-forward on the identity."""
    d = gd.A.shape[1]
    return (gd.advance(np.eye(d), k) - gd.advance(np.zeros((1, d)), k)).T  # row i is advance(e_i) − μ


def test_moments_match_the_covariance_of_explicit_linear_maps():
    gd, w0 = _gd(seed=3)
    rng = np.random.default_rng(0)
    A_test, y_test = rng.standard_normal((15, 40)), rng.standard_normal(15)
    kicks = np.array([50, 100, 150])
    steps = np.array([0, 20, 50, 99, 100, 160, 400])
    std = 0.3
    law = perturbed_gd_moments(gd, A_test, y_test, w0, steps, kicks, std)
    assert law.step.tolist() == steps.tolist()
    P_null = _linear_map(gd, 10**12)  # every row-space mode has contracted to 0: the null-space projector
    assert np.allclose(P_null @ P_null, P_null, atol=1e-12)
    for row in law.itertuples():
        t = row.step
        mu = gd.advance(w0, t)  # (R, d)
        C = sum(std**2 * _linear_map(gd, t - s) @ _linear_map(gd, t - s).T for s in kicks if s <= t)
        C = C if np.ndim(C) else np.zeros((40, 40))
        S = A_test @ C @ A_test.T
        e = mu @ A_test.T - y_test
        mean_q = ((e**2).sum(-1) + np.trace(S)) / 15
        var_q = (2 * np.sum(S * S) + 4 * np.einsum("ri,ij,rj->r", e, S, e)) / 15**2
        assert row.expected_test_mse == pytest.approx(mean_q.mean(), rel=LAW)
        assert row.expected_test_mse_sd == pytest.approx(np.sqrt(var_q.sum()) / 3, rel=1e-8, abs=1e-300)
        assert row.unperturbed_test_mse == pytest.approx(((e**2).sum(-1) / 15).mean(), rel=LAW)
        # ‖P_null w‖² with P_null w ~ N(P_null w0, P_null C P_null)
        Cn = P_null @ C @ P_null
        m0 = w0 @ P_null.T
        null_mean = (m0**2).sum(-1) + np.trace(Cn)
        null_var = 2 * np.sum(Cn * Cn) + 4 * np.einsum("ri,ij,rj->r", m0, Cn, m0)
        assert row.expected_null_norm2 == pytest.approx(null_mean.mean(), rel=LAW)
        assert row.expected_null_norm2_sd == pytest.approx(np.sqrt(null_var.sum()) / 3, rel=1e-8, abs=1e-300)


def test_moments_without_noise_are_the_trajectory():
    gd, w0 = _gd(seed=4)
    A_test, y_test = np.random.default_rng(1).standard_normal((10, 40)), np.zeros(10)
    law = perturbed_gd_moments(gd, A_test, y_test, w0, [0, 5, 500], [], 0.0)
    assert (law.expected_test_mse_sd == 0).all() and (law.expected_null_norm2_sd == 0).all()
    assert np.array_equal(law.expected_test_mse, law.unperturbed_test_mse)
    w = gd.advance(w0, 500)
    assert law.expected_test_mse.iloc[-1] == pytest.approx(((w @ A_test.T) ** 2).mean(-1).mean(), rel=1e-13)


def test_moments_hold_a_monte_carlo_run():
    # many runs of perturbed_gd: the mean over runs lands within 4 SDs of the exact law
    gd, _ = _gd(seed=6)
    R = 400
    rng = np.random.default_rng(2)
    w0 = 0.1 * rng.standard_normal((R, 40))
    A_test, y_test = rng.standard_normal((12, 40)) / np.sqrt(40), rng.standard_normal(12)
    sched = PerturbationSchedule(every=40, until=200, std=0.45)
    kicks = sched.steps(300)
    noise = gaussian_perturbations(sched, 300, seeds=range(100, 100 + R), dim=40)
    steps = [0, 41, 100, 201, 300]  # none at a kick (there the law is the state after it)

    def probe(w):
        return {"test_mse": ((w @ A_test.T - y_test) ** 2).mean(-1),
                "null_norm2": (gd.null_space_component(w) ** 2).sum(-1)}

    runs, _ = perturbed_gd(gd, w0, 300, steps, kicks, noise, probe)
    sim = runs[runs.step.isin(steps)].groupby("step")[["test_mse", "null_norm2"]].mean()
    law = perturbed_gd_moments(gd, A_test, y_test, w0, steps, kicks, 0.45).set_index("step")
    z_test = (sim.test_mse - law.expected_test_mse) / law.expected_test_mse_sd
    z_null = (sim.null_norm2 - law.expected_null_norm2) / law.expected_null_norm2_sd
    assert sim.test_mse[0] == pytest.approx(law.expected_test_mse[0], rel=1e-12)  # before any noise: exact
    assert len(z_test) == 5 and (z_test[1:].abs() < 4).all(), z_test
    assert len(z_null) == 5 and (z_null[1:].abs() < 4).all(), z_null
    assert law.expected_null_norm2[300] > 10 * law.expected_null_norm2[0]  # the walk: 5 kicks of σ² · 31 dims


# --------------------------------------------------------------------------- an nn.Module (Fig. 5)


def test_parameter_perturbation_is_a_quarter_of_each_tensors_std():
    model = torch.nn.Linear(300, 200)
    before = [p.detach().clone() for p in model.parameters()]
    perturb_parameters_(model, 0.25, torch.Generator().manual_seed(0))
    for p, p0 in zip(model.parameters(), before):
        ratio = float((p.detach() - p0).std() / p0.std())
        assert ratio == pytest.approx(0.25, rel=0.2 if p.numel() < 1000 else 0.02)


def test_parameter_perturbation_is_seeded_and_dtype_independent():
    torch.manual_seed(0)
    a = torch.nn.Linear(20, 5)
    b = torch.nn.Linear(20, 5).double()
    b.load_state_dict({k: v.double() for k, v in a.state_dict().items()})
    state = torch.random.get_rng_state()
    perturb_parameters_(a, 0.5, torch.Generator().manual_seed(3))
    perturb_parameters_(b, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    for pa, pb in zip(a.parameters(), b.parameters()):  # the same draws, cast to each dtype
        torch.testing.assert_close(pa.double(), pb, rtol=1e-6, atol=1e-6)
