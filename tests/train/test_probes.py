"""Probes against hand computations in numpy (float64) on a tiny seeded ensemble.

Each probe returns ``{name: (R,) tensor}``; run r's value is recomputed here from run r's weight
matrices with numpy only (explicit forward pass, explicit norms and SVDs), so the probes, the
diagnostics they call and the ensemble's batched forward pass are all checked against it.
"""

import numpy as np
import pytest
import torch

from implicitlab.models import Architecture, Ensemble
from implicitlab.train import ProbeContext, alignment_probe, loss_probe, margin_probe, norms_probe

F64 = torch.float64


def make_ensemble(arch: Architecture, runs: int = 3) -> Ensemble:
    return Ensemble.create(arch, init_scales=[0.6 + 0.3 * r for r in range(runs)], seeds=[11 + r for r in range(runs)])


def make_data(n: int, d: int, labels: str, seed: int = 0, classes: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if labels == "pm1":
        y = np.where(rng.standard_normal(n) >= 0, 1.0, -1.0)
        y[0], y[1] = 1.0, -1.0  # both classes present whatever the draw
    elif labels == "real":
        y = rng.standard_normal(n)
    else:  # class indices
        y = rng.integers(0, classes, size=n)
    return X, y


def ctx_of(model, X, y, loss="exp", reduction="mean", step=0) -> ProbeContext:
    yt = torch.tensor(y, dtype=torch.int64 if y.dtype.kind == "i" else F64)
    return ProbeContext(model=model, X=torch.tensor(X, dtype=F64), y=yt, loss=loss, reduction=reduction, step=step)


def numpy_weights(model: Ensemble, r: int) -> list[np.ndarray]:
    return [W[r].detach().numpy().copy() for W in model.weights]


def numpy_forward(weights: list[np.ndarray], X: np.ndarray, activation: str = "none") -> np.ndarray:
    """f(X) ``(n, d_out)`` of a bias-free chain, written out."""
    h = X
    for k, W in enumerate(weights):
        h = h @ W.T
        if k < len(weights) - 1 and activation == "relu":
            h = np.maximum(h, 0.0)
    return h


def numpy_loss(name: str, F: np.ndarray, y: np.ndarray, reduction: str) -> float:
    """The reduced loss from the outputs F ``(n, d_out)``, from each loss's definition."""
    if name == "square":
        terms = (F[:, 0] - y) ** 2
    elif name == "exp":
        terms = np.exp(-y * F[:, 0])
    elif name == "logistic":
        terms = np.log1p(np.exp(-y * F[:, 0]))
    else:  # cross-entropy: log Σ_j e^{f_j} − f_y
        top = F.max(1)
        terms = top + np.log(np.exp(F - top[:, None]).sum(1)) - F[np.arange(len(y)), y]
    return float(terms.mean() if reduction == "mean" else terms.sum())


def numpy_margins(F: np.ndarray, y: np.ndarray) -> np.ndarray:
    if F.shape[1] == 1:
        return y * F[:, 0]
    others = F.copy()
    others[np.arange(len(y)), y] = -np.inf
    return F[np.arange(len(y)), y] - others.max(1)


def assert_row_shapes(row: dict, runs: int) -> None:
    for key, value in row.items():
        assert value.shape == (runs,) and value.dtype == F64, key
        assert value.grad_fn is None, key  # measured under no_grad


# ------------------------------------------------------------------------------------ loss ---
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(
    "loss_name, d_out, labels",
    [("square", 1, "real"), ("exp", 1, "pm1"), ("logistic", 1, "pm1"), ("ce", 3, "classes")],
)
def test_loss_probe_is_the_training_loss_of_each_run(loss_name, d_out, labels, reduction, tol):
    arch = Architecture("deep_linear", d_in=3, depth=3, width=4, d_out=d_out)
    model = make_ensemble(arch)
    X, y = make_data(7, 3, labels)
    row = loss_probe(ctx_of(model, X, y, loss_name, reduction))
    assert set(row) == {"loss", "log_loss"}
    assert_row_shapes(row, 3)
    for r in range(3):
        expected = numpy_loss(loss_name, numpy_forward(numpy_weights(model, r), X), y, reduction)
        assert float(row["loss"][r]) == pytest.approx(expected, rel=tol[F64])
        assert float(row["log_loss"][r]) == pytest.approx(np.log(expected), rel=tol[F64], abs=tol[F64])


def test_log_loss_stays_finite_where_the_loss_underflows(tol):
    # one example, margin m = 1000: L = e^{-1000} underflows to 0 in float64, log L = -1000 exactly
    arch = Architecture("deep_linear", d_in=1, depth=2, width=1)
    model = Ensemble(arch, [torch.full((1, 1, 1), 10.0, dtype=F64), torch.full((1, 1, 1), 100.0, dtype=F64)])
    row = loss_probe(ctx_of(model, np.ones((1, 1)), np.ones(1), "exp"))
    assert float(row["loss"][0]) == 0.0
    assert float(row["log_loss"][0]) == pytest.approx(-1000.0, rel=tol[F64])


# ----------------------------------------------------------------------------------- norms ---
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_norms_probe_against_numpy(depth, tol):
    arch = Architecture("deep_linear", d_in=3, depth=depth, width=5, d_out=2)
    model = make_ensemble(arch)
    X, y = make_data(4, 3, "real")
    row = norms_probe(ctx_of(model, X, y, "square"))
    assert set(row) == {f"norm_{k + 1}" for k in range(depth)} | {"norm_product", "param_norm"}
    assert_row_shapes(row, 3)
    for r in range(3):
        ws = numpy_weights(model, r)
        fro = [np.linalg.norm(W, "fro") for W in ws]
        for k in range(depth):
            assert float(row[f"norm_{k + 1}"][r]) == pytest.approx(fro[k], rel=tol[F64])
        assert float(row["norm_product"][r]) == pytest.approx(np.prod(fro), rel=tol[F64])
        theta = np.concatenate([W.ravel() for W in ws])
        assert float(row["param_norm"][r]) == pytest.approx(np.linalg.norm(theta), rel=tol[F64])


# ---------------------------------------------------------------------------------- margin ---
@pytest.mark.parametrize(
    "arch, labels",
    [
        (Architecture("deep_linear", d_in=3, depth=3, width=4), "pm1"),
        (Architecture("mlp", d_in=3, depth=3, width=6, activation="relu"), "pm1"),
        (Architecture("mlp", d_in=3, depth=2, width=5, d_out=3, activation="relu"), "classes"),
    ],
    ids=["deep_linear", "relu", "relu-3-classes"],
)
def test_margin_probe_is_min_margin_over_product_of_frobenius_norms(arch, labels, tol):
    model = make_ensemble(arch)
    X, y = make_data(9, 3, labels)
    row = margin_probe(ctx_of(model, X, y, "exp" if labels == "pm1" else "ce"))
    assert set(row) == {"normalized_margin"}
    assert_row_shapes(row, 3)
    for r in range(3):
        ws = numpy_weights(model, r)
        F = numpy_forward(ws, X, arch.activation)
        expected = numpy_margins(F, y).min() / np.prod([np.linalg.norm(W, "fro") for W in ws])
        assert float(row["normalized_margin"][r]) == pytest.approx(expected, rel=tol[F64], abs=tol[F64])


@pytest.mark.parametrize("c", [0.01, 0.5, 3.0, 100.0])
def test_margin_probe_invariant_under_scaling_of_a_homogeneous_net(c, tol):
    # bias-free ReLU net of depth L: f(cθ; x) = c^L f(θ; x) and ∏‖c W_k‖_F = c^L ∏‖W_k‖_F
    arch = Architecture("mlp", d_in=3, depth=3, width=6, activation="relu")
    model = make_ensemble(arch)
    X, y = make_data(9, 3, "pm1")
    before = margin_probe(ctx_of(model, X, y))["normalized_margin"]
    scaled = Ensemble(arch, [c * W.detach() for W in model.weights])
    after = margin_probe(ctx_of(scaled, X, y))["normalized_margin"]
    torch.testing.assert_close(after, before, rtol=tol[F64], atol=tol[F64] * float(before.abs().max()))
    # the unnormalized margin does move by c^L: the probe's invariance is not a constant output
    raw = lambda m: (m(torch.tensor(X))[..., 0] * torch.tensor(y)).amin(-1)
    torch.testing.assert_close(raw(scaled), c**3 * raw(model), rtol=tol[F64], atol=0.0)


def test_margin_probe_sign_follows_the_worst_example(tol):
    # a linear predictor w = (1, 0): margins y_n x_n1; flipping one label makes the minimum negative
    arch = Architecture("deep_linear", d_in=2, depth=1)
    model = Ensemble(arch, [torch.tensor([[[1.0, 0.0]]], dtype=F64)])
    X = np.array([[2.0, 5.0], [-1.0, 3.0], [0.5, -7.0]])
    y = np.array([1.0, -1.0, 1.0])
    assert float(margin_probe(ctx_of(model, X, y))["normalized_margin"][0]) == pytest.approx(0.5, rel=tol[F64])
    y[1] = 1.0
    assert float(margin_probe(ctx_of(model, X, y))["normalized_margin"][0]) == pytest.approx(-1.0, rel=tol[F64])


# ------------------------------------------------------------------------------- alignment ---
@pytest.mark.parametrize("depth", [2, 3])
def test_alignment_probe_against_numpy_svd(depth, tol):
    arch = Architecture("deep_linear", d_in=3, depth=depth, width=4, d_out=2)
    model = make_ensemble(arch)
    X, y = make_data(4, 3, "real")
    row = alignment_probe(ctx_of(model, X, y, "square"))
    assert set(row) == {"rank_one_ratio_min", "alignment_min"}
    assert_row_shapes(row, 3)
    for r in range(3):
        svds = [np.linalg.svd(W) for W in numpy_weights(model, r)]
        ratios = [s[0] / np.sqrt((s**2).sum()) for _, s, _ in svds]
        aligns = [abs(svds[k + 1][2][0] @ svds[k][0][:, 0]) for k in range(depth - 1)]  # |v_{k+1}ᵀ u_k|
        assert float(row["rank_one_ratio_min"][r]) == pytest.approx(min(ratios), rel=tol[F64])
        # singular vectors of a random matrix: well separated, so 1e-12 absolute is rounding only
        assert float(row["alignment_min"][r]) == pytest.approx(min(aligns), rel=tol[F64], abs=tol[F64])


def test_alignment_probe_on_an_aligned_rank_one_chain_is_one(tol):
    # W_k = s_k u_{k+1} u_kᵀ with unit u_k: rank one (ratio 1) and aligned (|v_{k+1}ᵀ u_k| = 1)
    rng = np.random.default_rng(3)
    us = [v / np.linalg.norm(v) for v in rng.standard_normal((4, 3))]
    ws = [torch.tensor(2.0 * np.outer(us[k + 1], us[k]))[None] for k in range(3)]
    model = Ensemble(Architecture("deep_linear", d_in=3, depth=3, d_out=3), ws)
    row = alignment_probe(ctx_of(model, *make_data(4, 3, "real"), "square"))
    torch.testing.assert_close(row["rank_one_ratio_min"], torch.ones(1, dtype=F64), rtol=tol[F64], atol=tol[F64])
    torch.testing.assert_close(row["alignment_min"], torch.ones(1, dtype=F64), rtol=tol[F64], atol=tol[F64])


def test_alignment_probe_of_a_linear_predictor_has_no_alignment(tol):
    # depth 1: no consecutive layers; a 1×d matrix is rank one, ratio exactly 1
    model = make_ensemble(Architecture("deep_linear", d_in=3, depth=1))
    row = alignment_probe(ctx_of(model, *make_data(4, 3, "real"), "square"))
    assert set(row) == {"rank_one_ratio_min"}
    torch.testing.assert_close(row["rank_one_ratio_min"], torch.ones(3, dtype=F64), rtol=tol[F64], atol=tol[F64])


# ------------------------------------------------------------------------------- read-only ---
@pytest.mark.parametrize("probe", [loss_probe, norms_probe, margin_probe, alignment_probe],
                         ids=lambda p: p.__name__)
def test_probes_leave_the_model_as_they_found_it(probe):
    model = make_ensemble(Architecture("mlp", d_in=3, depth=3, width=4, activation="relu"))
    model.train()
    before = [W.detach().clone() for W in model.weights]
    probe(ctx_of(model, *make_data(5, 3, "pm1")))
    assert model.training
    for W, W0 in zip(model.weights, before):
        assert torch.equal(W, W0) and W.grad is None
