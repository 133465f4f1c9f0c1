"""Layer diagnostics on users' own modules: forward order, convolutions, biases, homogeneity, NaN inputs.

Every value is compared with a hand computation from the weights in float64 (relative 1e-12 unless
said), every refusal and warning with its message.
"""

import warnings

import pytest
import torch
from torch import nn

from implicitlab.diagnostics import (
    NotHomogeneousWarning,
    alignment,
    balancedness,
    homogeneity,
    layer_norms,
    layer_weights,
    min_margin,
    normalized_margin,
    rank_one_ratio,
    stable_rank,
)
from implicitlab.models import Architecture, Ensemble

F64 = torch.float64
REL = 1e-12


class Reversed(nn.Module):
    """Registers c, b, a but computes c(relu(b(relu(a(x))))): forward order a, b, c."""

    def __init__(self):
        super().__init__()
        self.c = nn.Linear(4, 1, bias=False)
        self.b = nn.Linear(5, 4, bias=False)
        self.a = nn.Linear(3, 5, bias=False)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


class RawReversed(nn.Module):
    """Raw parameters registered last layer first, used through matmuls."""

    def __init__(self, w1, w2):
        super().__init__()
        self.w2 = nn.Parameter(w2.clone())
        self.w1 = nn.Parameter(w1.clone())

    def forward(self, x):
        return torch.relu(x @ self.w1.T) @ self.w2.T


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3, bias=False)
        self.out = nn.Linear(3, 1, bias=False)

    def forward(self, x):
        return self.out(x + torch.relu(self.a(x)))


class Branchy(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3, bias=False)
        self.b = nn.Linear(3, 1, bias=False)

    def forward(self, x):
        h = self.a(x)
        return self.b(h if h.sum() > 0 else -h)


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p)
    return module.double()


def _X(n=10, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _no_warnings():
    return warnings.catch_warnings(action="error")


# ----------------------------------------------------------------------------- forward order ---
def test_out_of_order_registration_gives_the_in_order_values():
    model = _seeded(Reversed())
    in_order = nn.Sequential(nn.Linear(3, 5, bias=False), nn.ReLU(), nn.Linear(5, 4, bias=False), nn.ReLU(),
                             nn.Linear(4, 1, bias=False)).double()
    with torch.no_grad():
        for dst, src in zip((in_order[0], in_order[2], in_order[4]), (model.a, model.b, model.c)):
            dst.weight.copy_(src.weight)
    W1, W2, W3 = model.a.weight.detach(), model.b.weight.detach(), model.c.weight.detach()
    assert [w.shape for w in layer_weights(model)] == [(5, 3), (4, 5), (1, 4)]
    # balancedness by hand: D_k = W_{k+1}ᵀW_{k+1} − W_k W_kᵀ
    for got, ref, hand in zip(balancedness(model), balancedness(in_order), (W2.T @ W2 - W1 @ W1.T, W3.T @ W3 - W2 @ W2.T)):
        torch.testing.assert_close(got, hand, rtol=REL, atol=REL)
        torch.testing.assert_close(ref, hand, rtol=REL, atol=REL)
    # alignment by hand: |v_{k+1}ᵀ u_k| from each matrix's own SVD
    svds = [torch.linalg.svd(W) for W in (W1, W2, W3)]
    hand = torch.stack([(svds[k + 1].Vh[0] @ svds[k].U[:, 0]).abs() for k in range(2)])
    torch.testing.assert_close(alignment(model), hand, rtol=REL, atol=REL)
    torch.testing.assert_close(alignment(in_order), hand, rtol=REL, atol=REL)
    fro = torch.stack([torch.linalg.matrix_norm(W) for W in (W1, W2, W3)])
    torch.testing.assert_close(layer_norms(model).frobenius, fro, rtol=REL, atol=0)


def test_raw_parameters_registered_backwards_are_found_in_forward_order():
    g = torch.Generator().manual_seed(1)
    w1, w2 = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(2, 4, generator=g, dtype=F64)
    model = RawReversed(w1, w2)
    ws = layer_weights(model)
    assert torch.equal(ws[0], w1) and torch.equal(ws[1], w2)
    torch.testing.assert_close(balancedness(model)[0], w2.T @ w2 - w1 @ w1.T, rtol=REL, atol=REL)
    assert homogeneity(model) == (2, "")


def test_untraceable_module_is_refused_with_the_remedy():
    with pytest.raises(ValueError, match=r"cannot find the layers of Branchy in forward order: torch.fx could not "
                                         r"trace its forward .*; pass its weight tensors as a list, first layer first"):
        alignment(_seeded(Branchy()))
    # the remedy: the matrices as a list, in forward order
    m = _seeded(Branchy())
    a, b = m.a.weight.detach(), m.b.weight.detach()
    torch.testing.assert_close(balancedness([a, b])[0], b.T @ b - a @ a.T, rtol=REL, atol=REL)


# ------------------------------------------------------------------------------ convolutions ---
def _convnet():
    return _seeded(nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.ReLU(), nn.Conv2d(3, 4, 2, bias=False),
                                 nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 1, bias=False)), seed=2)


def test_conv_norms_are_those_of_the_reshaped_kernels():
    net = _convnet()
    kernels = [net[0].weight.detach(), net[2].weight.detach(), net[5].weight.detach()]
    mats = [k.reshape(k.shape[0], -1) for k in kernels]  # (out, in·k·k)
    norms = layer_norms(net)
    fro = torch.stack([k.pow(2).sum().sqrt() for k in kernels])  # Frobenius of the kernel itself
    spec = torch.stack([torch.linalg.svdvals(M)[0] for M in mats])
    torch.testing.assert_close(norms.frobenius, fro, rtol=REL, atol=0)
    torch.testing.assert_close(norms.spectral, spec, rtol=REL, atol=0)
    assert norms.param_norm.item() == pytest.approx(fro.pow(2).sum().sqrt().item(), rel=REL)
    hand_sr = torch.stack([(M.pow(2).sum() / torch.linalg.svdvals(M)[0] ** 2) for M in mats])
    torch.testing.assert_close(stable_rank(net), hand_sr, rtol=REL, atol=0)
    torch.testing.assert_close(rank_one_ratio(net), hand_sr.rsqrt(), rtol=REL, atol=0)


def test_conv_balancedness_and_alignment_refused_naming_the_layer():
    net = _convnet()
    for fn, what in ((balancedness, "balancedness"), (alignment, "alignment")):
        with pytest.raises(ValueError, match=rf"{what} is defined between consecutive fully connected layers; layer "
                                             r"'0.weight' is a kernel of shape \(3, 2, 3, 3\) \(a convolution\)"):
            fn(net)


def test_bias_free_conv_relu_net_is_homogeneous_and_its_margin_scale_invariant():
    net = _convnet()
    X = torch.randn(6, 2, 6, 6, generator=torch.Generator().manual_seed(3), dtype=F64)
    y = torch.sign(net(X)[:, 0].detach())
    assert homogeneity(net) == (3, "")
    with _no_warnings():
        ref = normalized_margin(net, X, y).item()
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(1.7)
        assert normalized_margin(net, X, y).item() == pytest.approx(ref, rel=REL)


# ------------------------------------------------------------------------ biases, homogeneity ---
def test_biased_mlp_param_norm_is_the_norm_of_all_parameters_and_margin_warns():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1)).double()
    hand = sum(float((p.detach() ** 2).sum()) for p in model.parameters()) ** 0.5  # weights and biases
    assert layer_norms(model).param_norm.item() == pytest.approx(hand, rel=REL)
    X = _X()
    y = torch.sign(model(X)[:, 0].detach())
    with pytest.warns(NotHomogeneousWarning, match=r"normalized_margin \(invariant to θ → cθ\) assumes a positively "
                                                   r"homogeneous model .* Sequential is not: bias of '0'; bias of '2'") as rec:
        normalized_margin(model, X, y)
    assert len(rec) == 1  # once per call
    with pytest.warns(NotHomogeneousWarning, match="balancedness .* bias of '0'"):
        balancedness(model)


def test_bias_free_relu_mlp_no_warning_and_scale_invariance_of_every_normalization():
    torch.manual_seed(7)  # a seed where no example's output is exactly 0 (dead ReLUs): every margin ≠ 0
    model = nn.Sequential(nn.Linear(3, 6, bias=False), nn.ReLU(), nn.Linear(6, 4, bias=False), nn.ReLU(),
                          nn.Linear(4, 1, bias=False)).double()
    X = _X(12)
    y = torch.sign(model(X)[:, 0].detach())
    ws = [m.weight.detach().clone() for m in (model[0], model[2], model[4])]
    # hand value: min_n y_n f(x_n) / ∏_k ‖W_k‖_F, and ‖θ‖^3 for "param" (degree 3)
    m_min = (y * model(X)[:, 0].detach()).min()
    assert m_min > 0.03  # not a trivial invariance of a zero margin
    theta = sum(float((w**2).sum()) for w in ws) ** 0.5
    with _no_warnings():
        fro = normalized_margin(model, X, y).item()
        par = normalized_margin(model, X, y, normalization="param").item()
        spe = normalized_margin(model, X, y, normalization="spectral").item()
    assert fro == pytest.approx(float(m_min) / float(torch.stack([w.norm() for w in ws]).prod()), rel=REL)
    assert par == pytest.approx(float(m_min) / theta**3, rel=REL)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # θ → 3θ
    with _no_warnings():
        assert normalized_margin(model, X, y).item() == pytest.approx(fro, rel=REL)
        assert normalized_margin(model, X, y, normalization="param").item() == pytest.approx(par, rel=REL)
        assert normalized_margin(model, X, y, normalization="spectral").item() == pytest.approx(spe, rel=REL)


def test_batch_norm_model_warns_and_is_left_as_found():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1, bias=False)).double()
    model.train()
    bn = model[1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    X = _X()
    y = torch.ones(10, dtype=F64)
    with pytest.warns(NotHomogeneousWarning, match=r"normalization layer '1' \(BatchNorm1d\)"):
        value = normalized_margin(model, X, y)
    assert model.training and bn.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running statistics and num_batches_tracked untouched
    # the value is the eval-mode one, by hand: BN with running mean 0, var 1 (fresh), weight 1, bias 0
    W1, W2 = model[0].weight.detach(), model[3].weight.detach()
    h = torch.relu((X @ W1.T) / (1 + bn.eps) ** 0.5)
    m_hand = (y * (h @ W2.T)[:, 0]).min()
    prod = W1.norm() * W2.norm()  # the layers: the two weight matrices (BN's scale is 1-D, not a layer)
    assert value.item() == pytest.approx(float(m_hand / prod), rel=REL)


def test_residual_connection_warns_naming_it():
    model = _seeded(Residual())
    assert homogeneity(model) == (None, "residual connection 'add' adds terms of degrees [0, 1]")
    X = _X()
    with pytest.warns(NotHomogeneousWarning, match="residual connection 'add' adds terms of degrees"):
        normalized_margin(model, X, torch.ones(10, dtype=F64))


def test_non_homogeneous_activations_warn():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 1, bias=False)).double()
    with pytest.warns(NotHomogeneousWarning, match="Tanh '1'"):
        normalized_margin(model, _X(), torch.ones(10, dtype=F64))
    ens = Ensemble.create(Architecture("mlp", d_in=3, depth=2, width=4, activation="gelu"), [1.0], [0])
    with pytest.warns(NotHomogeneousWarning, match="activation 'gelu' between the layers"):
        normalized_margin(ens, _X(), torch.ones(10, dtype=F64))
    relu = Ensemble.create(Architecture("mlp", d_in=3, depth=2, width=4, activation="relu"), [1.0], [0])
    with _no_warnings():
        normalized_margin(relu, _X(), torch.ones(10, dtype=F64))


# -------------------------------------------------------------------------------- NaN inputs ---
@pytest.mark.parametrize("fn", [normalized_margin, min_margin], ids=lambda f: f.__name__)
def test_non_finite_inputs_refused_with_count_and_first_row(fn):
    model = _seeded(Reversed())
    X = _X()
    X[4, 1] = float("nan")
    X[7, 0] = float("inf")
    with pytest.raises(ValueError, match=rf"X holds 2 non-finite entries \(NaN or inf\), the first in row 4: "
                                         rf"{fn.__name__} needs finite inputs"):
        fn(model, X, torch.ones(10, dtype=F64))
