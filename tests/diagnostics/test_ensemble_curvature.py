"""Batched sharpness of an ensemble against each run's explicit float64 Hessian."""

import math

import pytest
import torch

from implicitlab.diagnostics.ensemble_curvature import (
    EnsembleHessian,
    SharpnessProbe,
    ensemble_sharpness,
)
from implicitlab.losses import loss
from implicitlab.models import Architecture, Ensemble
from implicitlab.train import every, gradient_descent

F64 = torch.float64


def _explicit_hessian(member, loss_name, X, y):
    params = list(member.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    shapes = [p.shape for p in params]

    def f(theta):
        ws, i = [], 0
        for s in shapes:
            n = s.numel()
            ws.append(theta[i : i + n].reshape(s))
            i += n
        out = torch.func.functional_call(member, {f"weights.{j}": w for j, w in enumerate(ws)}, (X,))
        return loss(loss_name, out, y)

    return torch.func.hessian(f)(flat)


def _data(n=12, d=3, labels=False):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, dtype=F64, generator=g)
    y = X @ torch.randn(d, dtype=F64, generator=g)
    return (X, torch.sign(y)) if labels else (X, y)


@pytest.mark.parametrize(
    "arch,loss_name,labels",
    [
        (Architecture("deep_linear", d_in=3, depth=4), "square", False),
        (Architecture("residual", d_in=3, depth=3), "square", False),
        (Architecture("mlp", d_in=3, depth=3, width=4, activation="gelu"), "logistic", True),
    ],
    ids=["dln-square", "res-square", "gelu-logistic"],
)
def test_products_and_top_k_match_explicit_hessian(arch, loss_name, labels):
    X, y = _data(labels=labels)
    ens = Ensemble.create(arch, [0.5, 0.8, 1.0], [1, 2, 3])
    H = EnsembleHessian(ens, loss_name, X, y)
    V = torch.randn(3, H.D, dtype=F64, generator=torch.Generator().manual_seed(5))
    HV = H @ V
    res = ensemble_sharpness(ens, loss_name, X, y, k=2, tol=1e-10)
    for r in range(3):
        Hr = _explicit_hessian(ens.member(r), loss_name, X, y)
        torch.testing.assert_close(HV[r], Hr @ V[r], rtol=1e-11, atol=1e-12)
        ref = torch.linalg.eigvalsh(Hr).flip(0)[:2]
        # 1e-10 relative: Lanczos to tol 1e-10 with a certified residual
        torch.testing.assert_close(res.values[r], ref, rtol=1e-10, atol=0)
        assert bool(res.converged[r].all())
        assert float(res.residuals[r].max()) <= 1e-10 * float(ref.abs().max()) * 10


def test_run_r_equals_single_run_ensemble():
    arch = Architecture("deep_linear", d_in=3, depth=5)
    X, y = _data()
    ens = Ensemble.create(arch, [0.4, 0.6, 0.9], [4, 5, 6])
    alone = Ensemble.create(arch, [0.6], [5])
    a = ensemble_sharpness(ens, "square", X, y, tol=1e-11)
    b = ensemble_sharpness(alone, "square", X, y, tol=1e-11)
    assert a.values[1, 0].item() == pytest.approx(b.values[0, 0].item(), rel=1e-10)


def test_chunked_equals_unchunked():
    arch = Architecture("deep_linear", d_in=3, depth=3)
    X, y = _data()
    ens = Ensemble.create(arch, [0.4, 0.6, 0.8, 1.0, 1.2], [1, 2, 3, 4, 5])
    whole = ensemble_sharpness(ens, "square", X, y, tol=1e-11, chunk_runs=100)
    parts = ensemble_sharpness(ens, "square", X, y, tol=1e-11, chunk_runs=2)
    torch.testing.assert_close(parts.values, whole.values, rtol=1e-10, atol=0)
    assert parts.vectors.shape == whole.vectors.shape


def test_diverged_run_gives_nan_and_others_are_unaffected():
    arch = Architecture("deep_linear", d_in=3, depth=3)
    X, y = _data()
    ens = Ensemble.create(arch, [0.5, 0.5], [1, 1])
    with torch.no_grad():
        ens.weights[0][1, 0, 0] = float("nan")
    res = ensemble_sharpness(ens, "square", X, y, tol=1e-10)
    assert math.isnan(res.values[1, 0].item()) and not bool(res.converged[1, 0])
    ref = torch.linalg.eigvalsh(_explicit_hessian(ens.member(0), "square", X, y)).max()
    assert res.values[0, 0].item() == pytest.approx(ref.item(), rel=1e-10)


def test_run_whose_products_overflow_gives_nan_not_an_error():
    arch = Architecture("deep_linear", d_in=3, depth=4)
    X, y = _data()
    ens = Ensemble.create(arch, [0.5, 0.5], [1, 2])
    with torch.no_grad():
        for W in ens.weights:
            W[1] *= 1e80  # finite weights whose Hessian products overflow float64
    res = ensemble_sharpness(ens, "square", X, y, tol=1e-10)
    assert math.isnan(res.values[1, 0].item())
    ref = torch.linalg.eigvalsh(_explicit_hessian(ens.member(0), "square", X, y)).max()
    assert res.values[0, 0].item() == pytest.approx(ref.item(), rel=1e-10)


def test_warm_started_probe_needs_few_products_along_training():
    arch = Architecture("deep_linear", d_in=5, depth=10)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(50, 5, dtype=F64, generator=g)
    y = X @ torch.randn(5, dtype=F64, generator=g)
    ens = Ensemble.create(arch, [0.3, 0.35, 0.4], [0, 1, 2])
    probe = SharpnessProbe(tol=1e-6)
    res = gradient_descent(ens, "square", X, y, lr=0.02, num_steps=300, probe_steps=every(5, 300), probes=(probe,))
    t = res.table
    assert bool(t.sharpness_converged.all())
    late = t[t.step >= 50]
    # warm start (extrapolated from the last two top eigenvectors): a few products per estimate on
    # average, the explicit residual's included (measured 3.9 = 2.9 + 1; from the previous vector alone 3.6)
    assert late.sharpness_matvecs.mean() <= 4.5
    # the explicit residual certifies |λ − θ| ≤ r; with the gap rule the error r²/δ is far smaller
    assert (late.sharpness_residual <= 1e-3 * late.sharpness.abs()).all()
    final = ensemble_sharpness(ens, "square", X, y, tol=1e-12)
    last = t[t.step == 300].sort_values("run")
    torch.testing.assert_close(torch.tensor(last.sharpness.to_numpy()), final.values[:, 0], rtol=1e-6, atol=0)


def test_bad_k():
    arch = Architecture("deep_linear", d_in=2, depth=1)
    X, y = _data(d=2)
    ens = Ensemble.create(arch, [0.5], [0])
    with pytest.raises(ValueError, match="only 2 dimensions"):
        ensemble_sharpness(ens, "square", X, y, k=3)


# ------------------------------------------------------------------ written-out products of nonlinear chains


def _classes(n=12, d=3, C=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, d, dtype=F64, generator=g), torch.randint(0, C, (n,), generator=g)


@pytest.mark.parametrize("activation", ["gelu", "relu", "smooth_relu", "none"])
@pytest.mark.parametrize("loss_name", ["square", "exp", "logistic", "ce"])
def test_written_out_products_match_explicit_per_run_hessians(activation, loss_name):
    """Every run's H v against its own explicit float64 Hessian (torch.func.hessian), 1e-12 relative."""
    d_out = 3 if loss_name == "ce" else 1
    if loss_name == "ce":
        X, y = _classes()
    else:
        X, y = _data(labels=loss_name != "square")
    arch = Architecture("mlp", d_in=3, depth=3, width=4, d_out=d_out, activation=activation, eps=0.5)
    ens = Ensemble.create(arch, [0.7, 1.0, 1.4], [1, 2, 3])
    H = EnsembleHessian(ens, loss_name, X, y)
    assert H.method == ("statistics" if (loss_name == "square" and activation == "none") else "written-out")
    V = torch.randn(3, H.D, dtype=F64, generator=torch.Generator().manual_seed(5))
    HV = H @ V
    for r in range(3):
        ref = _explicit_hessian(ens.member(r), loss_name, X, y) @ V[r]
        scale = float(ref.abs().max())
        torch.testing.assert_close(HV[r], ref, rtol=1e-12, atol=1e-12 * scale, msg=lambda m, r=r: f"run {r}: {m}")


def test_written_out_products_with_a_fixed_head():
    """Residual nets (fixed head) with the logistic loss take the written-out path too."""
    X, y = _data(labels=True)
    ens = Ensemble.create(Architecture("residual", d_in=3, depth=3), [0.5, 1.0], [1, 2])
    H = EnsembleHessian(ens, "logistic", X, y)
    V = torch.randn(2, H.D, dtype=F64, generator=torch.Generator().manual_seed(6))
    HV = H @ V
    for r in range(2):
        m = ens.member(r)
        params = list(m.parameters())
        flat = torch.cat([p.detach().reshape(-1) for p in params])

        def f(theta, m=m, params=params):
            ws, i = [], 0
            for p in params:
                ws.append(theta[i: i + p.numel()].reshape(p.shape))
                i += p.numel()
            out = torch.func.functional_call(m, {f"weights.{j}": w for j, w in enumerate(ws)}, (X,))
            return loss("logistic", out, y)

        ref = torch.func.hessian(f)(flat) @ V[r]
        torch.testing.assert_close(HV[r], ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


def test_products_follow_in_place_updates():
    """The cached forward/backward state is rebuilt when the weights change in place."""
    X, y = _data()
    arch = Architecture("deep_linear", d_in=3, depth=3, activation="gelu")
    ens = Ensemble.create(arch, [0.6, 0.9], [1, 2])
    H = EnsembleHessian(ens, "square", X, y)
    V = torch.randn(2, H.D, dtype=F64, generator=torch.Generator().manual_seed(7))
    H @ V
    gradient_descent(ens, "square", X, y, lr=0.05, num_steps=3)
    HV = H @ V
    for r in range(2):
        ref = _explicit_hessian(ens.member(r), "square", X, y) @ V[r]
        torch.testing.assert_close(HV[r], ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


def test_nonlinear_sharpness_per_run_and_nan_isolated():
    """GELU ensemble: top eigenvalue of every run vs eigvalsh of its explicit Hessian; a NaN run stays NaN alone."""
    X, y = _data()
    arch = Architecture("deep_linear", d_in=3, depth=4, activation="gelu")
    ens = Ensemble.create(arch, [0.5, 0.8, 1.1], [1, 2, 3])
    with torch.no_grad():
        ens.weights[1][2, 0, 0] = float("nan")
    res = ensemble_sharpness(ens, "square", X, y, tol=1e-11)
    assert math.isnan(res.values[2, 0].item()) and not bool(res.converged[2, 0])
    for r in range(2):
        ref = torch.linalg.eigvalsh(_explicit_hessian(ens.member(r), "square", X, y)).max()
        assert res.values[r, 0].item() == pytest.approx(ref.item(), rel=1e-10)
        assert bool(res.converged[r, 0])
