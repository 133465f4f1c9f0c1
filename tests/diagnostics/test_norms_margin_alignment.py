"""First diagnostics against closed forms and the theory's invariances."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from implicitlab.diagnostics import (
    alignment,
    balancedness,
    layer_norms,
    normalized_margin,
    rank_one_ratio,
    stable_rank,
)
from implicitlab.models import Architecture, Ensemble, LayeredNet
from implicitlab.train import gradient_descent

F64 = torch.float64


def test_layer_norms_against_numpy():
    net = LayeredNet.create(Architecture("mlp", d_in=4, depth=3, width=6, activation="relu"), 1.0, 0)
    norms = layer_norms(net)
    ws = [w.detach().numpy() for w in net.weights]
    np.testing.assert_allclose(norms.frobenius.numpy(), [np.linalg.norm(w) for w in ws], rtol=1e-14)
    np.testing.assert_allclose(norms.spectral.numpy(), [np.linalg.norm(w, 2) for w in ws], rtol=1e-13)
    assert norms.frobenius_product.item() == pytest.approx(np.prod([np.linalg.norm(w) for w in ws]), rel=1e-13)
    assert norms.param_norm.item() == pytest.approx(np.sqrt(sum((w**2).sum() for w in ws)), rel=1e-14)


def test_layer_norms_ensemble_has_run_dimension():
    ens = Ensemble.create(Architecture("deep_linear", d_in=3, depth=4), [0.5, 1.0], [0, 1])
    norms = layer_norms(ens)
    assert norms.frobenius.shape == (2, 4) and norms.frobenius_product.shape == (2,)
    torch.testing.assert_close(norms.frobenius[1], layer_norms(ens.member(1)).frobenius)


@settings(max_examples=25, deadline=None, derandomize=True)  # the same examples on every run
@given(c=st.floats(0.05, 20.0), layer_c=st.lists(st.floats(0.2, 5.0), min_size=3, max_size=3))
def test_normalized_margin_invariant_under_rescaling(c, layer_c):
    # bias-free ReLU net of depth 3 is 1-homogeneous in each layer: f(c_k W_k) = ∏c_k f(W).
    arch = Architecture("mlp", d_in=3, depth=3, width=5, activation="relu")
    net = LayeredNet.create(arch, 1.0, 3)
    X = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = torch.sign(net(X).squeeze(-1).detach())
    ref_fro = normalized_margin(net, X, y).item()
    ref_param = normalized_margin(net, X, y, normalization="param").item()
    scaled_all = LayeredNet(arch, [c * w.detach() for w in net.weights])
    assert normalized_margin(scaled_all, X, y).item() == pytest.approx(ref_fro, rel=1e-12)
    assert normalized_margin(scaled_all, X, y, normalization="param").item() == pytest.approx(ref_param, rel=1e-12)
    per_layer = LayeredNet(arch, [ck * w.detach() for ck, w in zip(layer_c, net.weights)])
    assert normalized_margin(per_layer, X, y).item() == pytest.approx(ref_fro, rel=1e-12)
    assert normalized_margin(per_layer, X, y, normalization="spectral").item() == pytest.approx(
        normalized_margin(net, X, y, normalization="spectral").item(), rel=1e-12
    )


def test_normalized_margin_linear_is_geometric_margin():
    w = torch.tensor([[3.0, 4.0]], dtype=F64)
    net = LayeredNet(Architecture("deep_linear", d_in=2, depth=1), [w])
    X = torch.tensor([[1.0, 1.0], [-1.0, 0.5]], dtype=F64)
    y = torch.tensor([1.0, -1.0], dtype=F64)
    # margins 7 and 1 → min 1, /‖w‖ = 5
    assert normalized_margin(net, X, y).item() == pytest.approx(0.2, rel=1e-15)


def _rank_one_chain(d=4, depth=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    us = [torch.nn.functional.normalize(torch.randn(d, dtype=F64, generator=g), dim=0) for _ in range(depth)]
    us.append(torch.ones(1, dtype=F64))
    rhos = [1.5, 0.7, 2.0][:depth]
    return [rhos[k] * torch.outer(us[k + 1], us[k]) for k in range(depth)]


def test_rank_one_aligned_chain_has_unit_ratios():
    ws = _rank_one_chain()
    torch.testing.assert_close(rank_one_ratio(ws), torch.ones(3, dtype=F64), rtol=1e-13, atol=0)
    torch.testing.assert_close(stable_rank(ws), torch.ones(3, dtype=F64), rtol=1e-13, atol=0)
    torch.testing.assert_close(alignment(ws), torch.ones(2, dtype=F64), rtol=1e-13, atol=0)


def test_alignment_of_orthogonal_layers_is_zero_and_stable_rank_of_identity():
    e1, e2 = torch.eye(3, dtype=F64)[0], torch.eye(3, dtype=F64)[1]
    ws = [torch.outer(e1, e2), torch.outer(e2, e1)]  # u_1 = e1, v_2 = e1 ... aligned
    assert alignment(ws).item() == pytest.approx(1.0)
    ws = [torch.outer(e1, e2), torch.outer(e1, e2)]  # u_1 = e1, v_2 = e2: orthogonal
    assert alignment(ws).item() == pytest.approx(0.0, abs=1e-15)
    assert stable_rank([torch.eye(5, dtype=F64)]).item() == pytest.approx(5.0)


def test_balancedness_nearly_conserved_by_small_step_gd():
    # Gradient flow conserves W_{k+1}ᵀW_{k+1} − W_k W_kᵀ; GD changes it by O(η²) per step.
    arch = Architecture("deep_linear", d_in=3, depth=3)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, dtype=F64, generator=g)
    y = X @ torch.randn(3, dtype=F64, generator=g)
    drifts = []
    for lr in (2e-3, 1e-3):
        ens = Ensemble.create(arch, [0.8], [5])
        before = [b.clone() for b in balancedness(ens)]
        steps = int(round(0.4 / lr))  # same time t = η·steps
        gradient_descent(ens, "square", X, y, lr=lr, num_steps=steps)
        after = balancedness(ens)
        drifts.append(max((a - b).norm().item() for a, b in zip(after, before)))
    # the drift over a fixed time is O(η): halving η halves it (ratio in [1.6, 2.4])
    assert 1.6 < drifts[0] / drifts[1] < 2.4
    assert drifts[1] < 1e-2


def test_diverged_run_gives_nan_not_an_error():
    ens = Ensemble.create(Architecture("deep_linear", d_in=3, depth=3), [0.5, 0.5], [0, 1])
    with torch.no_grad():
        ens.weights[1][0, 0, 0] = float("nan")
    for values in (layer_norms(ens).spectral, stable_rank(ens), alignment(ens)):
        assert torch.isfinite(values[1]).all()
        assert torch.isnan(values[0]).any()
    torch.testing.assert_close(alignment(ens)[1], alignment(ens.member(1)))
