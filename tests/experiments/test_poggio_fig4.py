"""poggio2018-fig4: config checks, the exact fast-forward against explicit GD on the experiment's problem, the null-space walk."""

import dataclasses

import numpy as np
import pytest
import torch

from implicitlab.config import ConfigError
from implicitlab.experiments.poggio2018.fig4 import PRESETS, Fig4Config, claims, problem, run
from implicitlab.models import Architecture, Ensemble
from implicitlab.train import gradient_descent
from implicitlab.train.perturb import perturbed_gd


@pytest.fixture(scope="module")
def tiny():
    table = run(PRESETS["tiny"])
    return table, {c.name: c for c in claims(table)}


def test_paper_step_is_unstable_under_the_sum_loss():
    # Eq. 13's Σ(y − f)² with η = 0.2: η λ_max ≈ 11 ≥ 2, refused before anything runs
    with pytest.raises(ConfigError, match="diverges"):
        Fig4Config(reduction="sum")
    with pytest.raises(ConfigError, match="legendre"):  # √(2j+1)P_j features: η λ_max ≈ 6.6
        Fig4Config(bases=("legendre",))
    with pytest.raises(ConfigError):
        Fig4Config(perturb_until=20_000_000)


def test_presets_run_the_papers_iteration_counts():
    cfg = PRESETS["quick"]
    assert (cfg.num_steps, cfg.perturb_every, cfg.perturb_until) == (10_000_000, 120_000, 5_000_000)
    assert cfg.perturb_std == 0.45
    assert (cfg.repetitions, cfg.degree, cfg.num_train, cfg.num_test, cfg.lr) == (29, 39, 9, 100, 0.2)
    assert (cfg.control_degree, cfg.control_steps, cfg.control_repetitions) == (30, 250_000, 30)
    assert PRESETS["full"].num_steps == 10_000_000


def test_tiny_table_and_claims(tiny):
    table, found = tiny
    for basis in ("monomial", "chebyshev"):
        pert = table[(table.setting == "perturbed") & (table.basis == basis)]
        assert pert.num_perturbations.max() == 10  # 20k, 40k, …, 200k
        assert int(pert.null_dim.iloc[0]) == 31
        assert f"{basis}: fast-forward = explicit GD" not in found  # a test now, not a claim
        # the null-space random walk matches its exact law
        assert found[f"{basis}: ‖P_null w‖² grows like a random walk"].verdict == "holds"
        assert found[f"{basis}: the rise is the null-space walk's"].verdict == "holds"
    # Chebyshev features: GD reaches machine precision in each phase and the test error rises a lot
    assert found["chebyshev: … to machine precision (Fig. 4 caption)"].verdict == "holds"
    assert found["chebyshev: test error rises with perturbations"].measured > 3
    # monomials: the slowest mode is not converged after 20k iterations (0.63 left per phase)
    assert found["monomial: … to machine precision (Fig. 4 caption)"].verdict == "refuted"


def test_expected_walk_is_exact_without_noise():
    # with one repetition pair and no perturbation left, the exact expectation is the trajectory itself
    cfg = dataclasses.replace(PRESETS["tiny"], bases=("chebyshev",))
    table = run(cfg)
    ctrl = table[table.setting == "control"]
    assert np.allclose(ctrl.test_mse, ctrl.expected_test_mse, rtol=1e-10)
    assert np.allclose(ctrl.null_norm2, ctrl.expected_null_norm2, rtol=1e-10)


@pytest.mark.parametrize("basis", ["monomial", "chebyshev"])
def test_fast_forward_is_explicit_gd_on_the_experiments_own_problem(basis):
    """The experiment's numbers rest on the exact fast-forward: on its own features and step size
    (quick preset), 20,000 explicit float64 GD steps of the package with a perturbation half-way give
    the same iterates to 1e-10 relative (rounding accumulated by explicit stepping, with margin).
    This was a claim of the experiment ("fast-forward = explicit GD"): it checks our code, so it is a test."""
    cfg = PRESETS["quick"]
    gd, _, _ = problem(cfg, cfg.degree, basis)
    p, num_steps = cfg.degree + 1, 20_000
    k1 = num_steps // 2
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal((2, p)) / np.sqrt(3.0 * p)
    kick = cfg.perturb_std * rng.standard_normal((1, 2, p))
    _, w_ff = perturbed_gd(gd, w0, num_steps, [], np.array([k1]), kick)

    X, y = torch.tensor(gd.A), torch.tensor(gd.b)
    ens = Ensemble(Architecture("deep_linear", d_in=p, depth=1), [torch.tensor(w0[:, None, :])])
    gradient_descent(ens, "square", X, y, lr=cfg.lr, num_steps=k1, reduction=cfg.reduction, probe_steps=[])
    with torch.no_grad():
        ens.weights[0].add_(torch.tensor(kick[0][:, None, :]))
    gradient_descent(ens, "square", X, y, lr=cfg.lr, num_steps=num_steps - k1, reduction=cfg.reduction,
                     probe_steps=[])
    w_gd = ens.weights[0].detach().numpy()[:, 0, :]
    rel = np.linalg.norm(w_ff - w_gd, axis=-1) / np.linalg.norm(w_gd, axis=-1)
    assert rel.max() <= 1e-10, rel
