"""The kept state between products at one θ: the kept graph and the linearized program agree with
recomputed products and the dense reference, follow parameters, buffers and mode (never stale),
and fall back under the memory budget or for models the trace cannot handle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hessian_problems import RTOL, SignBranch, as_matrix, cnn, dense_hessian, make_problem, mlp, reference_loss
from implicitlab.diagnostics.hessian import HessianOperator


@pytest.mark.parametrize("reuse", ["graph", "linearized"])
def test_kept_state_follows_the_parameters(reuse):
    """What is kept is rebuilt after an optimizer step, a ``p.data`` edit and a frozen-parameter
    change; each product then equals a fresh operator's (never a stale one)."""
    model, X, y = make_problem(cnn, "ce")
    H = HessianOperator(model, "ce", X, y, chunk_size=7, reuse=reuse)
    v = torch.randn(H.dim, dtype=torch.float64)
    fresh = lambda: HessianOperator(model, "ce", X, y, reuse="none", check_determinism=False) @ v
    first = H @ v
    torch.testing.assert_close(first, fresh(), rtol=RTOL, atol=1e-14)
    kept = H.kept.chunks
    assert torch.equal(H @ v, first) and H.kept.chunks is kept  # same θ: the kept state is reused
    assert H.reuse_status == reuse
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(X), y).backward()
    opt.step()
    after_step = H @ v
    assert H.kept.chunks is not kept and not torch.allclose(after_step, first)
    torch.testing.assert_close(after_step, fresh(), rtol=RTOL, atol=1e-14)
    model[0].weight.data.mul_(1.5)  # .data: no autograd version bump, still seen
    torch.testing.assert_close(H @ v, fresh(), rtol=RTOL, atol=1e-14)
    model[0].bias.requires_grad_(False)  # frozen parameters are constants of H, compared too
    H2 = HessianOperator(model, "ce", X, y, chunk_size=7, reuse=reuse)
    w = torch.randn(H2.dim, dtype=torch.float64)
    before = H2 @ w
    with torch.no_grad():
        model[0].bias.add_(1.0)
    expected = HessianOperator(model, "ce", X, y, reuse="none", check_determinism=False) @ w
    assert not torch.allclose(expected, before)
    torch.testing.assert_close(H2 @ w, expected, rtol=RTOL, atol=1e-14)


def test_linearized_falls_back_for_data_dependent_control_flow():
    torch.manual_seed(0)
    model = SignBranch().double()
    X, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    H = HessianOperator(model, "ce", X, y, reuse="linearized")
    ref = dense_hessian(model, reference_loss("ce"), X, y)
    torch.testing.assert_close(as_matrix(H), ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))
    assert H.reuse_status.startswith("graph: the linearized program failed"), H.reuse_status


def test_graph_memory_limit_falls_back_to_recomputing():
    model, X, y = make_problem(mlp, "ce")
    H = HessianOperator(model, "ce", X, y, chunk_size=7, graph_memory=1)
    ref = dense_hessian(model, reference_loss("ce"), X, y)
    torch.testing.assert_close(as_matrix(H), ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))
    assert H.reuse_status.startswith("none: the kept state exceeds graph_memory = 1 bytes")
    assert H.kept.chunks is None and H.graph_bytes == 0


def test_linearized_over_the_memory_limit_falls_back_to_the_graph():
    model, X, y = make_problem(cnn, "ce")
    graph = HessianOperator(model, "ce", X, y, chunk_size=7)
    graph @ torch.zeros(graph.dim, dtype=torch.float64)
    linear = HessianOperator(model, "ce", X, y, chunk_size=7, reuse="linearized")
    linear @ torch.zeros(linear.dim, dtype=torch.float64)
    assert linear.graph_bytes > graph.graph_bytes > 0  # the boundary values are the larger state
    H = HessianOperator(model, "ce", X, y, chunk_size=7, reuse="linearized", graph_memory=graph.graph_bytes)
    ref = dense_hessian(model, reference_loss("ce"), X, y)
    torch.testing.assert_close(as_matrix(H), ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))
    assert H.reuse_status.startswith("graph: the kept state exceeds graph_memory"), H.reuse_status
    assert H.graph_bytes == graph.graph_bytes


@pytest.mark.parametrize("reuse", ["graph", "linearized"])
def test_batch_norm_in_eval_mode_follows_its_buffers(reuse):
    """Buffers are inputs of the kept state: new running statistics give a new operator."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1)).double()
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    X, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    H = HessianOperator(model, "square", X, y, reuse=reuse)
    ref = dense_hessian(model, reference_loss("square"), X, y.reshape(-1, 1))
    torch.testing.assert_close(as_matrix(H), ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))
    assert H.reuse_status == reuse
    with torch.no_grad():
        model[1].running_mean.add_(0.3)
    ref2 = dense_hessian(model, reference_loss("square"), X, y.reshape(-1, 1))
    assert not torch.allclose(ref2, ref)
    torch.testing.assert_close(as_matrix(H), ref2, rtol=RTOL, atol=RTOL * float(ref2.abs().max()))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = x + torch.tanh(self.a(x))  # skip connections: shared inputs, summed branches
        return self.out(h + torch.nn.functional.gelu(self.b(h)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reuse_modes_agree_on_a_residual_net(dtype):
    torch.manual_seed(0)
    model = Residual().to(dtype)
    X, y = torch.randn(25, 4, dtype=dtype), torch.randint(0, 3, (25,))
    V = torch.randn(sum(p.numel() for p in model.parameters()), 5, dtype=dtype)
    products = {r: HessianOperator(model, "ce", X, y, chunk_size=10, reuse=r) @ V for r in ("none", "graph", "linearized")}
    tol = 1e-5 if dtype == torch.float32 else RTOL
    for r in ("graph", "linearized"):
        assert products[r].dtype == dtype
        torch.testing.assert_close(products[r], products["none"], rtol=tol, atol=tol * float(products["none"].abs().max()))
    if dtype == torch.float64:
        ref = dense_hessian(model, reference_loss("ce"), X, y) @ V
        torch.testing.assert_close(products["linearized"], ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))


def test_linearized_program_is_traced_again_when_the_mode_changes():
    """A module whose forward differs between train and eval (no randomness), measured in its own
    mode (mode="model"): the trace of one mode must not serve the other."""

    class ModeScaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            out = torch.tanh(self.lin(x))
            return 2.0 * out if self.training else out

    torch.manual_seed(0)
    model = ModeScaled().double().eval()
    X, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    H = HessianOperator(model, "ce", X, y, reuse="linearized", mode="model")  # the model's own mode
    eval_ref = dense_hessian(model, reference_loss("ce"), X, y)
    torch.testing.assert_close(as_matrix(H), eval_ref, rtol=RTOL, atol=RTOL * float(eval_ref.abs().max()))
    model.train()
    train_ref = dense_hessian(model, reference_loss("ce"), X, y)
    assert not torch.allclose(train_ref, eval_ref)
    torch.testing.assert_close(as_matrix(H), train_ref, rtol=RTOL, atol=RTOL * float(train_ref.abs().max()))
    assert H.reuse_status == "linearized" and len(H.kept.programs) == 2
