"""HessianOperator: products against a dense torch.func.hessian reference (float64), and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from implicitlab.diagnostics.determinism import NondeterministicHessianError
from implicitlab.diagnostics.hessian import HessianOperator, hessian_vector_product

RTOL = 1e-10  # float64 products vs the dense reference: both are exact up to rounding


def mlp(out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 6, bias=False), nn.Tanh(), nn.Linear(6, 5, bias=False), nn.GELU(), nn.Linear(5, out, bias=False)
    )


def cnn(out: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 2, 3, stride=2), nn.Softplus(),
        nn.Flatten(), nn.Linear(8, out),
    )


def deep_linear(out: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(3, 3, bias=False) for _ in range(3)], nn.Linear(3, out, bias=False))


INPUTS = {mlp: (4,), cnn: (2, 6, 6), deep_linear: (3,)}
OUTPUTS = {"square": 2, "exp": 1, "logistic": 1, "ce": 3}


def make_problem(arch, loss: str, n: int = 20, seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = arch(OUTPUTS[loss]).to(dtype)
    X = torch.randn(n, *INPUTS[arch], dtype=dtype)
    if loss == "square":
        y = torch.randn(n, 2, dtype=dtype)
    elif loss == "ce":
        y = torch.randint(0, 3, (n,))
    else:
        y = torch.randint(0, 2, (n,)).to(dtype) * 2 - 1
    return model, X, y


def reference_loss(name: str):
    """The four conventions written out independently of implicitlab.losses."""
    return {
        "square": lambda f, y: (f - y.reshape(f.shape)).square().sum(-1).mean(),
        "exp": lambda f, y: torch.exp(-y * f.reshape(-1)).mean(),
        "logistic": lambda f, y: F.softplus(-y * f.reshape(-1)).mean(),
        "ce": lambda f, y: F.cross_entropy(f, y),
    }[name]


def dense_hessian(model: nn.Module, loss_fn, X, y) -> torch.Tensor:
    """torch.func.hessian of the full-batch loss over the flattened trainable parameters."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names, shapes = [n for n, _ in named], [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(theta):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return loss_fn(functional_call(model, params, (X,)), y)

    return torch.func.hessian(f)(flat)


def as_matrix(H: HessianOperator) -> torch.Tensor:
    return H @ torch.eye(H.dim, dtype=H.dtype)


@pytest.mark.parametrize("reuse", ["graph", "linearized", "none"])
@pytest.mark.parametrize("arch", [mlp, cnn, deep_linear], ids=["mlp", "cnn", "deep_linear"])
@pytest.mark.parametrize("loss", ["square", "exp", "logistic", "ce"])
def test_products_match_dense_hessian(arch, loss, reuse):
    model, X, y = make_problem(arch, loss)
    H = HessianOperator(model, loss, X, y, chunk_size=7, reuse=reuse)  # chunks 7, 7, 6: weights matter
    ref = dense_hessian(model, reference_loss(loss), X, y)
    got = as_matrix(H)  # 32 columns per pass: batched (vmapped) products
    single = H @ torch.eye(H.dim, dtype=H.dtype)[:, 0]  # one column: the unbatched path
    assert got.dtype == torch.float64 and H.backend == "func"
    assert H.reuse_status == reuse and (H.graph_bytes > 0) == (reuse != "none")
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))
    torch.testing.assert_close(single, ref[:, 0], rtol=RTOL, atol=RTOL * float(ref.abs().max()))


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


class SignBranch(nn.Module):
    """A forward with a Python branch on a value: a trace would freeze the branch taken."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        out = self.lin(x)
        return torch.tanh(out) if out.sum() > 0 else out.square()


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


def test_double_backward_fallback_matches():
    model, X, y = make_problem(cnn, "ce")
    func = as_matrix(HessianOperator(model, "ce", X, y, backend="func"))
    auto = HessianOperator(model, "ce", X, y, backend="autograd")
    torch.testing.assert_close(as_matrix(auto), func, rtol=RTOL, atol=1e-14)
    assert auto.backend == "autograd"


def test_loader_and_chunking_give_the_same_operator():
    model, X, y = make_problem(mlp, "logistic", n=23)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=6)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    whole = HessianOperator(model, "logistic", X, y, chunk_size=1000) @ v
    from_loader = HessianOperator(model, "logistic", loader, chunk_size=4) @ v  # batches split 4 + 2
    torch.testing.assert_close(from_loader, whole, rtol=RTOL, atol=1e-14)


def test_callable_loss_is_a_batch_mean_and_reduction_sum():
    model, X, y = make_problem(mlp, "ce")
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    named = HessianOperator(model, "ce", X, y, chunk_size=6) @ v
    torch.testing.assert_close(HessianOperator(model, F.cross_entropy, X, y, chunk_size=6) @ v, named)
    summed = HessianOperator(model, "ce", X, y, chunk_size=6, reduction="sum") @ v
    torch.testing.assert_close(summed, X.shape[0] * named)


def test_square_loss_convention_no_half_and_scalar_targets():
    # one output (n, 1) with targets (n,): R = mean (f − y)², Hessian 2/n XᵀX for a linear model
    torch.manual_seed(1)
    X, y = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    torch.testing.assert_close(as_matrix(HessianOperator(model, "square", X, y)), 2 * X.T @ X / 9)
    with pytest.raises(ValueError, match="as many targets as outputs"):
        HessianOperator(nn.Linear(3, 2, bias=False).double(), "square", X, y)


def test_to_scipy_and_counts():
    model, X, y = make_problem(mlp, "square")
    H = HessianOperator(model, "square", X, y)
    assert H.num_matvecs == 2  # the determinism probe
    D = H.dim
    v = np.random.default_rng(0).standard_normal(D)
    op = H.to_scipy()
    assert op.shape == (D, D) and op.dtype == np.float64
    np.testing.assert_allclose(op.matvec(v), (H @ torch.from_numpy(v)).numpy(), rtol=1e-13)
    assert H.num_matvecs == 4
    H @ torch.zeros(D, 3, dtype=torch.float64)
    assert H.num_matvecs == 7


def test_operator_follows_the_model_as_it_trains():
    model, X, y = make_problem(mlp, "exp")
    H = HessianOperator(model, "exp", X, y)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.3)
    torch.testing.assert_close(as_matrix(H), dense_hessian(model, reference_loss("exp"), X, y), rtol=RTOL, atol=1e-12)


def test_float32_model_gives_float32_products_and_data_are_cast():
    model, X, y = make_problem(mlp, "square", dtype=torch.float32)
    H = HessianOperator(model, "square", X.double(), y.double())  # float64 data cast to the model's dtype
    out = H @ torch.ones(H.dim, dtype=torch.float64)
    assert H.dtype == torch.float32 and out.dtype == torch.float32
    ref = dense_hessian(model.double(), reference_loss("square"), X.double(), y.double()).sum(1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)  # float32 rounding


def test_gradient_matches_autograd():
    model, X, y = make_problem(cnn, "logistic")
    H = HessianOperator(model, "logistic", X, y, chunk_size=3)
    value, g = H.loss_and_gradient()
    model.zero_grad()
    ref = reference_loss("logistic")(model(X), y)
    ref.backward()
    torch.testing.assert_close(g, torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert value == pytest.approx(float(ref.detach()), rel=1e-12)


def test_one_shot_product():
    model, X, y = make_problem(deep_linear, "square")
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    expected = dense_hessian(model, reference_loss("square"), X, y) @ v
    torch.testing.assert_close(hessian_vector_product(model, "square", X, y, v), expected)


# ------------------------------------------------------------------------------ bad input ---
def test_parameters_on_two_dtypes():
    model = nn.Sequential(nn.Linear(3, 3).double(), nn.Linear(3, 1).float())
    with pytest.raises(ValueError, match="several dtypes"):
        HessianOperator(model, "square", torch.randn(4, 3), torch.randn(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parameters_on_two_devices():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1).cuda())
    with pytest.raises(ValueError, match="devices"):
        HessianOperator(model, "square", torch.randn(4, 3), torch.randn(4))


def test_empty_data_set():
    model = nn.Linear(3, 1).double()
    with pytest.raises(ValueError, match="empty"):
        HessianOperator(model, "square", torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64))
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        HessianOperator(model, "square", torch.utils.data.DataLoader(empty, batch_size=4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(loss="hinge"), "unknown loss"),
        (dict(loss="exp", out=2), "one output per example"),
        (dict(y=torch.randn(5)), "same number of examples"),
        (dict(y=None), "y is required"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(backend="jax"), "unknown backend"),
    ],
)
def test_clear_errors(kwargs, match):
    loss, out = kwargs.pop("loss", "square"), kwargs.pop("out", 1)
    y = kwargs.pop("y", torch.randn(4))
    with pytest.raises(ValueError, match=match):
        HessianOperator(nn.Linear(3, out), loss, torch.randn(4, 3), y, **kwargs)


def test_no_trainable_parameters():
    model = nn.Linear(3, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        HessianOperator(model, "square", torch.randn(4, 3), torch.randn(4))


def test_dropout_in_train_mode_fails_the_determinism_probe():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 1)).double()
    X, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    with pytest.raises(NondeterministicHessianError, match="train mode") as info:
        HessianOperator(model, "square", X, y)
    assert "Dropout" in str(info.value) and "model.eval()" in str(info.value)
    HessianOperator(model.eval(), "square", X, y)  # eval mode: one fixed operator


def test_batch_norm_in_train_mode_is_refused_and_buffers_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1)).double()
    X, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    before = {n: b.clone() for n, b in model.named_buffers()}
    with pytest.raises(NondeterministicHessianError, match="batch-norm"):
        HessianOperator(model, "square", X, y)
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    H = HessianOperator(model.eval(), "square", X, y)
    torch.testing.assert_close(as_matrix(H), dense_hessian(model, reference_loss("square"), X, y.reshape(-1, 1)))


def test_loader_must_yield_pairs():
    X, y = torch.randn(4, 3), torch.randn(4)
    with pytest.raises(TypeError, match=r"\(X, y\) pairs"):
        HessianOperator(nn.Linear(3, 1), "square", [(X, y, X)])


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
    """A module whose forward differs between train and eval (no randomness): the trace of one
    mode must not serve the other."""

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
    H = HessianOperator(model, "ce", X, y, reuse="linearized")
    eval_ref = dense_hessian(model, reference_loss("ce"), X, y)
    torch.testing.assert_close(as_matrix(H), eval_ref, rtol=RTOL, atol=RTOL * float(eval_ref.abs().max()))
    model.train()
    train_ref = dense_hessian(model, reference_loss("ce"), X, y)
    assert not torch.allclose(train_ref, eval_ref)
    torch.testing.assert_close(as_matrix(H), train_ref, rtol=RTOL, atol=RTOL * float(train_ref.abs().max()))
    assert H.reuse_status == "linearized" and len(H.kept.programs) == 2
