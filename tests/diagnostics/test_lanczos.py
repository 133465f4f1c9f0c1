"""The Lanczos core: a batch of R operators against per-run eigvalsh (float64), one model as R = 1,
per-run stopping, restarts and NaN policy, the rounding floor of half-precision operators, warm starts."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from implicitlab.diagnostics import EigenResult, Lanczos, WarmStart, ensemble_sharpness, lanczos_eigenpairs, sharpness
from implicitlab.diagnostics.hessian import HessianOperator
from implicitlab.diagnostics.lanczos import FLOOR_FACTOR
from implicitlab.models import Architecture, Ensemble

F64 = torch.float64
HALF = [torch.bfloat16, torch.float16]


def synthetic(eigenvalues, seed: int = 0) -> torch.Tensor:
    """Q diag(λ) Qᵀ with a random orthogonal Q: a symmetric operator whose spectrum we choose."""
    lam = torch.as_tensor(eigenvalues, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(lam.numel(), lam.numel(), generator=g, dtype=F64))
    return Q @ torch.diag(lam) @ Q.T


def spectrum(top, n: int, seed: int = 0) -> torch.Tensor:
    return synthetic(torch.cat([torch.tensor(top, dtype=F64), torch.linspace(-1.0, 1.0, n, dtype=F64)]), seed)


# ------------------------------------------------------------------------ batches of operators ---
def test_batch_matches_eigvalsh_per_run_and_stops_each_run_on_its_own():
    # three spectra, three convergence speeds: each run stops when its own pairs converge
    A = torch.stack([spectrum([3.0, 2.0], 58), spectrum([3.0, 2.999], 58, seed=1), spectrum([1.5, 1.2], 58, seed=2)])
    res = lanczos_eigenpairs(A, k=2, tol=1e-10)
    assert res.values.shape == (3, 2) and res.vectors.shape == (3, 60, 2) and res.run_matvecs.shape == (3,)
    for r in range(3):
        ref = torch.linalg.eigvalsh(A[r]).flip(0)[:2]
        torch.testing.assert_close(res.values[r], ref, rtol=1e-10, atol=0.0)
        V = res.vectors[r]
        explicit = torch.linalg.vector_norm(A[r] @ V - V * res.values[r], dim=0)
        assert (explicit <= 10 * 1e-10 * res.values[r].abs()).all()
    assert res.all_converged and res.num_matvecs == int(res.run_matvecs.max())
    assert len(set(res.run_matvecs.tolist())) > 1  # the runs stopped at different products


def test_one_operator_is_run_zero_of_a_batch_of_one():
    A = spectrum([2.0, 1.5], 38)
    single = lanczos_eigenpairs(A, k=2, tol=1e-10, explicit_residuals=True)
    batch = lanczos_eigenpairs(A.unsqueeze(0), k=2, tol=1e-10, explicit_residuals=True)
    # same random start (row 0 of the seed's draw), same products: the same numbers
    for name in ("values", "residuals", "error_bounds", "converged", "lanczos_residuals", "run_matvecs"):
        torch.testing.assert_close(getattr(batch.run(0), name), getattr(single, name), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(batch.vectors[0], single.vectors, rtol=0, atol=1e-10)
    assert single.num_matvecs == batch.num_matvecs == int(single.run_matvecs)
    assert single.values.shape == (2,) and single.vectors.shape == (40, 2) and single.run_matvecs.shape == ()
    assert single.num_runs is None and batch.num_runs == 1


def test_restart_after_breakdown_is_per_run():
    # run 0 has a double top eigenvalue: its Krylov space is invariant after 29 products and it
    # restarts to find the second copy; run 1 does not need to
    A = torch.stack([
        synthetic(torch.cat([torch.tensor([2.0, 2.0], dtype=F64), torch.linspace(-1.0, 1.0, 28, dtype=F64)]), 3),
        spectrum([2.0, 1.9, 1.8], 27, seed=4),
    ])
    res = lanczos_eigenpairs(A, k=3, tol=1e-10)
    torch.testing.assert_close(res.values[0], torch.tensor([2.0, 2.0, 1.0], dtype=F64), rtol=1e-10, atol=0.0)
    torch.testing.assert_close(res.values[1], torch.tensor([2.0, 1.9, 1.8], dtype=F64), rtol=1e-10, atol=0.0)
    V = res.vectors[0]
    torch.testing.assert_close(V.T @ V, torch.eye(3, dtype=F64), rtol=0, atol=1e-8)
    assert res.all_converged


def test_non_finite_run_gives_nan_and_the_others_are_unaffected():
    A = torch.stack([spectrum([2.0, 1.0], 18), spectrum([3.0, 1.0], 18, seed=1)])
    A[1, 3, 5] = float("nan")
    res = lanczos_eigenpairs(A, tol=1e-10, explicit_residuals=True)
    assert math.isnan(res.values[1, 0].item()) and not bool(res.converged[1, 0])
    assert math.isnan(res.residuals[1, 0].item()) and bool(res.vectors[1].isnan().all())
    assert res.values[0, 0].item() == pytest.approx(2.0, rel=1e-10) and bool(res.converged[0, 0])
    # one operator follows the same rule: a NaN result, not an exception
    one = lanczos_eigenpairs(A[1], tol=1e-10)
    assert math.isnan(one.values[0].item()) and not one.all_converged and "NOT CONVERGED" in repr(one)


def test_batched_start_rows_zero_or_nan_take_a_random_start():
    A = torch.stack([spectrum([2.0, 1.0], 18), spectrum([3.0, 1.0], 18, seed=1)])
    cold = lanczos_eigenpairs(A, tol=1e-10)
    v0 = cold.vectors[:, :, 0].clone()
    v0[1] = float("nan")
    warm = lanczos_eigenpairs(A, tol=1e-10, v0=v0)
    assert warm.all_converged and int(warm.run_matvecs[0]) <= 2  # run 0 started at its eigenvector
    torch.testing.assert_close(warm.values, cold.values, rtol=1e-10, atol=0.0)
    with pytest.raises(ValueError, match="v0 must have shape"):
        lanczos_eigenpairs(A, v0=torch.ones(20, dtype=F64))


def test_ensemble_run_and_one_model_give_the_same_result_fields():
    # one calling convention: ensemble_sharpness(...).run(r) and sharpness(member r, ...) agree
    arch = Architecture("deep_linear", d_in=3, depth=3)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(12, 3, dtype=F64, generator=g)
    y = X @ torch.randn(3, dtype=F64, generator=g)
    ens = Ensemble.create(arch, [0.5, 0.9], [1, 2])
    batch = ensemble_sharpness(ens, "square", X, y, k=2, tol=1e-10)
    for r in range(2):
        one = sharpness(ens.member(r), "square", X, y, k=2, tol=1e-10, explicit_residuals=True)
        run = batch.run(r)
        for name in ("values", "vectors", "residuals", "error_bounds", "converged", "lanczos_residuals", "run_matvecs"):
            assert getattr(run, name).shape == getattr(one, name).shape, name
        torch.testing.assert_close(run.values, one.values, rtol=1e-10, atol=0.0)
        assert run.residual_kind == one.residual_kind == "explicit"


# ------------------------------------------------------------------------- half precision ---
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_matrix_never_converges_below_its_rounding_floor(dtype):
    A = spectrum([3.0, 2.0], 58).to(dtype)
    exact = torch.linalg.eigvalsh(A.double()).flip(0)  # the matrix the operator holds
    eps = torch.finfo(dtype).eps
    res = lanczos_eigenpairs(A, k=2, tol=1e-6)
    assert res.vectors.dtype == torch.float32  # the basis is kept in float32
    assert not bool(res.converged.any())  # 1e-6 is far below what a half-precision product resolves
    assert (res.residuals >= eps * res.values.abs()).all()
    assert ((res.values - exact[:2]).abs() <= res.residuals).all()  # … and the residuals still certify
    # a tolerance above the floor is met, and certified
    loose = lanczos_eigenpairs(A, k=1, tol=0.05)
    assert loose.all_converged and abs(float(loose.values[0]) - float(exact[0])) <= float(loose.residuals[0])
    assert abs(float(loose.values[0]) - float(exact[0])) <= float(loose.error_bounds[0])


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_invariant_subspace_certifies_nothing(dtype):
    # diag with three distinct values: every Krylov space has dimension ≤ 3, so β falls to the
    # product's rounding at the third step — a breakdown that must not certify 1e-6
    A = torch.diag(torch.tensor([4.0] * 5 + [2.0] * 5 + [1.0] * 10)).to(dtype)
    res = lanczos_eigenpairs(A, tol=1e-6)
    assert not res.all_converged and float(res.residuals[0]) >= torch.finfo(dtype).eps * 4.0
    assert abs(float(res.values[0]) - 4.0) <= float(res.residuals[0])


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_model_operator_is_not_a_false_certificate(dtype):
    # the bug this replaces: bfloat16 sharpness was λ = 0, residual 0, "converged", after one product.
    # sharpness now refuses such a model (below); the core, given its operator, reports the floor.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    X, y = torch.randn(30, 5).to(dtype), torch.randint(0, 3, (30,))
    exact = sharpness(copy.deepcopy(model).double(), "ce", X.double(), y, tol=1e-10)  # same weights, float64
    res = lanczos_eigenpairs(HessianOperator(model, "ce", X, y))
    assert not res.all_converged and res.num_matvecs > 1
    assert abs(float(res.values[0]) - float(exact.values[0])) <= float(res.residuals[0])
    assert float(res.residuals[0]) <= 0.1 * float(exact.values[0])  # a useful estimate, honestly flagged


@pytest.mark.parametrize("dtype", HALF)
def test_sharpness_refuses_a_half_precision_model_before_any_product(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    X, y = torch.randn(30, 5).to(dtype), torch.randint(0, 3, (30,))
    calls = []

    def counting_ce(outputs, targets):
        calls.append(1)
        return nn.functional.cross_entropy(outputs, targets)

    before = {n: p.clone() for n, p in model.state_dict().items()}
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ValueError, match=rf"^the model's parameters are {name}: curvature in half precision cannot "
                                         r"be certified .*; pass a float32 or float64 copy, e\.g\. copy\.deepcopy\(model\)\.float\(\)$"):
        sharpness(model, counting_ce, X, y)
    assert calls == []  # refused before the determinism probe's products
    assert all(torch.equal(before[n], p) and p.dtype == dtype for n, p in model.state_dict().items())


def test_float_operators_have_a_rounding_floor_except_float64():
    assert Lanczos(torch.eye(4, dtype=F64), capacity=4).floor_eps == 0.0
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        lz = Lanczos(torch.eye(4, dtype=dtype), capacity=4)
        assert lz.floor_eps == FLOOR_FACTOR * torch.finfo(dtype).eps
        assert lz.dtype == (torch.float32 if dtype != F64 else F64)


def test_float64_results_are_those_of_the_solver_before_the_batched_core():
    # pinned from the one-model Lanczos that the batched core replaced (same products, same values)
    lam = torch.cat([torch.tensor([1.0, 1.0 - 1e-6], dtype=F64), torch.linspace(-0.3, 0.9, 398, dtype=F64)])
    res = lanczos_eigenpairs(synthetic(lam), k=2, tol=1e-12)
    assert res.num_matvecs == 74 and res.all_converged
    before = torch.tensor([0.99999999999999967, 0.99999899999999986], dtype=F64)
    torch.testing.assert_close(res.values, before, rtol=1e-14, atol=0.0)  # BLAS threads change the last bits
    torch.testing.assert_close(res.residuals, torch.tensor([4.3884926326844763e-13, 8.592703476893506e-13],
                                                           dtype=F64), rtol=1e-6, atol=0.0)


# ---------------------------------------------------------------------------- warm starts ---
def test_warm_start_aligns_signs_and_extrapolates():
    warm = WarmStart()
    assert warm.vector() is None
    v1 = torch.tensor([[1.0], [0.0], [0.0]], dtype=F64)
    warm.update(v1)
    torch.testing.assert_close(warm.vector(), v1)
    v2 = torch.tensor([[-0.8], [-0.6], [0.0]], dtype=F64)  # the same direction with the opposite sign
    warm.update(v2)
    torch.testing.assert_close(warm.blocks[-1], -v2)
    torch.testing.assert_close(warm.vector(), 2 * (-v2) - v1)
    plain = WarmStart(extrapolate=False)
    plain.update(v1)
    plain.update(v2)
    torch.testing.assert_close(plain.vector(), -v2)
    lost = WarmStart()
    lost.update(torch.full((3, 1), float("nan"), dtype=F64))
    assert lost.vector() is None  # one model without a finite previous vector: a random start


def test_warm_start_of_an_ensemble_is_per_run():
    warm = WarmStart()
    first = torch.tensor([[[1.0], [0.0]], [[float("nan")], [float("nan")]]], dtype=F64)  # (R=2, D=2, k=1)
    warm.update(first)
    second = torch.tensor([[[0.0], [1.0]], [[1.0], [0.0]]], dtype=F64)
    warm.update(second)
    start = warm.vector()
    torch.testing.assert_close(start[0], 2 * second[0] - first[0])  # extrapolated
    torch.testing.assert_close(start[1], second[1])  # no finite predecessor: the last vector


def test_repr_of_a_batch():
    res = lanczos_eigenpairs(torch.stack([spectrum([2.0], 9)] * 10), tol=1e-8)
    text = repr(res)
    assert "10 runs" in text and "run 7:" in text and "2 more runs" in text
    assert isinstance(res, EigenResult) and res.run(3).values.shape == (1,)
