"""SharpnessTracker: warm-started estimates along GD against dense float64 eigenvalues."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from implicitlab.diagnostics import SharpnessTracker, lanczos_eigenpairs

TOL = 1e-6  # the tracker's relative accuracy target (gap criterion: an estimate, so allow 3×)


def problem(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(6, 10, bias=False), nn.Tanh(), nn.Linear(10, 6, bias=False), nn.Tanh(), nn.Linear(6, 3, bias=False)
    ).double()
    X, y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    return model, X, y


def dense_top(model: nn.Module, X, y, k: int) -> torch.Tensor:
    """The k largest eigenvalues of torch.func.hessian of the mean cross-entropy (independent path)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(theta):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return F.cross_entropy(functional_call(model, params, (X,)), y)

    return torch.linalg.eigvalsh(torch.func.hessian(f)(flat)).flip(0)[:k]


@pytest.mark.parametrize("extrapolate", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_tracker_follows_gd_with_fewer_products_than_cold_starts(extrapolate, k):
    model, X, y = problem()
    tracker = SharpnessTracker(model, "ce", X, y, k=k, tol=TOL, extrapolate=extrapolate)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    cold = []
    for step in range(12):
        res = tracker()
        exact = dense_top(model, X, y, k)
        torch.testing.assert_close(res.values, exact, rtol=3 * TOL, atol=0.0)
        assert res.all_converged
        cold.append(lanczos_eigenpairs(tracker.operator, k=k, tol=TOL, criterion="gap", seed=100 + step).num_matvecs)
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    warm = [r.num_matvecs for r in tracker.history[2:]]
    assert sum(warm) / len(warm) < 0.8 * sum(cold[2:]) / len(cold[2:]), (warm, cold)  # measured 0.29–0.69
    assert tracker.num_matvecs == sum(r.num_matvecs for r in tracker.history)


def test_start_vectors_previous_then_extrapolated():
    model, X, y = problem(1)
    tracker = SharpnessTracker(model, "ce", X, y)
    assert tracker.start_vector() is None
    first = tracker().vectors
    torch.testing.assert_close(tracker.start_vector(), first)  # one estimate: the previous vector
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)
    second = tracker.warm.blocks[-1]
    assert float((second * first).sum()) > 0  # signs aligned with the predecessor
    torch.testing.assert_close(tracker.start_vector(), 2 * second - first)


def test_bad_arguments_fail_before_any_estimate():
    model, X, y = problem()
    with pytest.raises(ValueError, match="k = 200"):
        SharpnessTracker(model, "ce", X, y, k=200)
    with pytest.raises(ValueError, match="criterion"):
        SharpnessTracker(model, "ce", X, y, criterion="magic")


def test_history_frame_one_row_per_call_with_stable_columns():
    model, X, y = problem(2)
    tracker = SharpnessTracker(model, "ce", X, y, k=2, tol=TOL)
    empty = tracker.history_frame()
    assert list(empty.columns) == [
        "call", "step", "value", "residual", "error_bound", "converged", "num_matvecs", "wall_time_s",
        "value_2", "residual_2", "error_bound_2",
    ]
    assert len(empty) == 0
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for step in range(3):
        tracker(step=10 * step if step != 1 else None)
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    frame = tracker.history_frame()
    assert list(frame.columns) == list(empty.columns) and len(frame) == 3
    assert frame["call"].tolist() == [0, 1, 2]
    assert frame["step"].iloc[0] == 0 and frame["step"].isna().iloc[1] and frame["step"].iloc[2] == 20
    assert str(frame["step"].dtype) == "Int64" and frame["value"].dtype == "float64"
    assert frame["converged"].dtype == bool and frame["num_matvecs"].dtype == "int64"
    for i, res in enumerate(tracker.history):  # the table holds the results' numbers exactly
        assert frame["value"][i] == float(res.values[0]) and frame["value_2"][i] == float(res.values[1])
        assert frame["residual"][i] == float(res.residuals[0])
        assert frame["error_bound_2"][i] == float(res.error_bounds[1])
        assert frame["num_matvecs"][i] == res.num_matvecs and frame["converged"][i] == res.all_converged
    assert (frame["wall_time_s"] > 0).all()
    assert int(frame["num_matvecs"].sum()) == tracker.num_matvecs
