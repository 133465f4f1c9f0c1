"""Labels and targets: one policy everywhere — ±1 for exp/logistic/margins, class indices for "ce",
matching real targets for "square" — and a one-line refusal that says what was expected otherwise.

Each refusal is asserted with its message; each accepted case against a hand computation (float64).
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from implicitlab.diagnostics import min_margin, normalized_margin, sharpness
from implicitlab.losses import check_targets, loss, margins
from implicitlab.models import Architecture, Ensemble
from implicitlab.references.svm import svm_max_margin
from implicitlab.train import gradient_descent

F64 = torch.float64


def _data(n=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y01 = (X[:, 0] > 0).to(F64)
    y01[0], y01[1] = 0.0, 1.0  # both classes whatever the draw
    return X, y01


def _mlp(d_out=1, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, d_out)).double()


def zero_one(what: str) -> str:
    """The refusal of {0, 1} labels, as a regex."""
    return rf"labels must be -1/\+1 for {what}, got \{{0, 1\}}: use y = 2\*y - 1"


# ------------------------------------------------------------------- {0, 1} for ±1 losses ---
@pytest.mark.parametrize("loss_name", ["exp", "logistic"])
def test_zero_one_labels_refused_by_sharpness(loss_name):
    X, y01 = _data()
    with pytest.raises(ValueError, match=zero_one(f"the '{loss_name}' loss")):
        sharpness(_mlp(), loss_name, X, y01)


@pytest.mark.parametrize("loss_name", ["exp", "logistic"])
def test_zero_one_labels_refused_by_gradient_descent_before_any_step(loss_name):
    X, y01 = _data()
    ens = Ensemble.create(Architecture("deep_linear", d_in=3, depth=2), [0.5], [0])
    before = [w.detach().clone() for w in ens.weights]
    with pytest.raises(ValueError, match=zero_one(f"the '{loss_name}' loss")):
        gradient_descent(ens, loss_name, X, y01, lr=0.1, num_steps=3)
    assert all(torch.equal(w, w0) for w, w0 in zip(ens.weights, before))  # no step was taken


@pytest.mark.parametrize("fn", [normalized_margin, min_margin], ids=lambda f: f.__name__)
def test_zero_one_labels_refused_by_margins(fn):
    X, y01 = _data()
    with pytest.raises(ValueError, match=zero_one("margins")):
        fn(_mlp(), X, y01)
    with pytest.raises(ValueError, match=zero_one("margins")):
        margins(torch.ones(12, 1, dtype=F64), y01)


def test_svm_refuses_zero_one_labels_in_the_same_words():
    X, y01 = _data()
    with pytest.raises(ValueError, match=zero_one("the SVM")):
        svm_max_margin(X.numpy(), y01.numpy())


def test_three_label_values_for_a_scalar_output_name_the_fix():
    y = torch.tensor([0.0, 1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"got \{0, 1, 2\}: map the two classes to -1 and \+1 \(for more classes "
                                         r"use C outputs and class indices\)"):
        check_targets("logistic", y, (4, 1))


def test_pm1_labels_accepted_and_equal_to_the_hand_value():
    # mapped labels y = 2*y01 - 1: logistic loss mean_n log(1 + e^{-y_n f_n}) by hand, float64
    f = torch.tensor([[0.5], [-2.0], [1.5]], dtype=F64)
    y = 2 * torch.tensor([1.0, 0.0, 0.0], dtype=F64) - 1
    expected = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.5))) / 3
    assert loss("logistic", f, y).item() == pytest.approx(expected, rel=1e-15)
    # integer ±1 labels are the same labels
    assert loss("logistic", f, y.long()).item() == loss("logistic", f, y).item()


def test_normalized_margin_with_mapped_labels_is_the_hand_value():
    # a bias-free linear predictor w = (3, 4): margins y_n wᵀx_n = 7 and 1, min 1, ‖w‖ = 5
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    X = torch.tensor([[1.0, 1.0], [-1.0, 0.5]], dtype=F64)
    y = 2 * torch.tensor([1.0, 0.0], dtype=F64) - 1
    assert normalized_margin(model, X, y).item() == pytest.approx(0.2, rel=1e-15)


# ---------------------------------------------------------------------- cross-entropy targets ---
def test_ce_targets_of_shape_n_by_1_refused_up_front():
    X, y01 = _data()
    y = y01.long()[:, None]  # (12, 1): torch would fail deep in gather with an expand error
    msg = (r"the 'ce' loss needs class indices of shape \(12,\) for outputs \(12, 2\) \(n examples, C classes\), "
           r"got targets of shape \(12, 1\): use y.squeeze\(-1\)")
    with pytest.raises(ValueError, match=msg):
        sharpness(_mlp(d_out=2), "ce", X, y)
    ens = Ensemble.create(Architecture("mlp", d_in=3, depth=2, width=4, d_out=2, activation="relu"), [1.0], [0])
    with pytest.raises(ValueError, match=msg):
        gradient_descent(ens, "ce", X, y, lr=0.1, num_steps=1)


def test_ce_float_targets_refused_with_the_mapping():
    X, y01 = _data()
    one_hot = torch.nn.functional.one_hot(y01.long(), 2).to(F64)
    with pytest.raises(ValueError, match=r"the 'ce' loss needs integer class indices of shape "
                                         r"\(n,\), got dtype torch.float64: for one-hot targets use y.argmax\(-1\)"):
        sharpness(_mlp(d_out=2), "ce", X, one_hot)
    with pytest.raises(ValueError, match=r"got dtype torch.float64: use y.long\(\)"):
        check_targets("ce", y01, (12, 2))


def test_ce_class_index_out_of_range_refused():
    ens = Ensemble.create(Architecture("mlp", d_in=3, depth=2, width=4, d_out=2, activation="relu"), [1.0], [0])
    X, y01 = _data()
    y = y01.long()
    y[3] = 2
    with pytest.raises(ValueError, match=r"class indices for the 'ce' loss must lie in \[0, 2\), got \{0, 1, 2\}"):
        gradient_descent(ens, "ce", X, y, lr=0.1, num_steps=1)


def test_ce_accepted_equals_torch_cross_entropy():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(6, 3, generator=g, dtype=F64)
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    check_targets("ce", y, f.shape)
    assert loss("ce", f, y).item() == pytest.approx(torch.nn.functional.cross_entropy(f, y).item(), rel=1e-14)


# ---------------------------------------------------------------------------- square targets ---
def test_square_targets_must_match_the_outputs():
    X, _ = _data()
    ens = Ensemble.create(Architecture("deep_linear", d_in=3, depth=2, d_out=2), [0.5], [0])
    with pytest.raises(ValueError, match=r"the 'square' loss needs targets of shape \(…, n, 2\) for outputs "
                                         r"\(12, 2\), got \(12,\)"):
        gradient_descent(ens, "square", X, X[:, 0], lr=0.1, num_steps=1)
    y = X[:, :1].clone()
    y[5, 0] = float("nan")
    with pytest.raises(ValueError, match=r"targets for the 'square' loss hold 1 non-finite values"):
        check_targets("square", y, (12, 1))


def test_exp_labels_of_shape_n_by_1_refused_where_they_would_broadcast():
    # (n,) outputs times (n, 1) labels would broadcast to (n, n): a silently wrong loss
    f = torch.tensor([[1.0], [-1.0], [2.0]], dtype=F64)
    y = torch.tensor([[1.0], [-1.0], [1.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"the 'exp' loss needs labels of shape \(3,\) \(-1/\+1, one per example\) "
                                         r"for outputs \(3, 1\), got \(3, 1\): use y.squeeze\(-1\)"):
        loss("exp", f, y)
    assert loss("exp", f, y.squeeze(-1)).item() == pytest.approx(np.mean(np.exp([-1.0, -1.0, -2.0])), rel=1e-15)


def test_ensemble_targets_shared_or_per_run_accepted():
    # outputs (R, n, 1) of an ensemble: labels (n,) shared by the runs, or (R, n) per run (SGD batches)
    check_targets("exp", torch.ones(5), (3, 5, 1))
    check_targets("exp", torch.ones(3, 5), (3, 5, 1))
    check_targets("ce", torch.zeros(5, dtype=torch.long), (3, 5, 4))
    check_targets("square", torch.zeros(5, 2), (3, 5, 2))


def test_loader_labels_are_checked_before_any_product():
    # the same refusal for a DataLoader as for tensors: {0, 1} labels with the logistic loss
    from torch.utils.data import DataLoader, TensorDataset

    from implicitlab.diagnostics.hessian import HessianOperator

    g = torch.Generator().manual_seed(0)
    X = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).to(torch.float64)  # {0, 1}
    model = torch.nn.Linear(3, 1, bias=False).double()
    loader = DataLoader(TensorDataset(X, y), batch_size=4)
    with pytest.raises(ValueError, match=r"-1/\+1 for the 'logistic' loss.*2\*y - 1"):
        HessianOperator(model, "logistic", loader)


def test_tracker_refuses_a_half_precision_model():
    from implicitlab.diagnostics import SharpnessTracker

    g = torch.Generator().manual_seed(0)
    X = torch.randn(8, 3, generator=g)
    y = torch.randn(8, generator=g)
    model = torch.nn.Linear(3, 1).bfloat16()
    with pytest.raises(ValueError, match="bfloat16: curvature in half precision cannot be certified"):
        SharpnessTracker(model, "square", X.bfloat16(), y.bfloat16())
