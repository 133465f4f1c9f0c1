"""Shared by the HessianOperator tests: tiny models and data, the four loss conventions written
out independently of implicitlab.losses, and the dense ``torch.func.hessian`` reference (float64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

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


def as_matrix(H) -> torch.Tensor:
    """The operator's D × D matrix, from H @ I (batched products)."""
    return H @ torch.eye(H.dim, dtype=H.dtype)


class SignBranch(nn.Module):
    """A forward with a Python branch on a value: a trace would freeze the branch taken."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        out = self.lin(x)
        return torch.tanh(out) if out.sum() > 0 else out.square()
