"""The traced, split forward-over-reverse program (TangentProgram) against ``torch.func.hessian``
in float64: the tangent part fed the primal part's boundary gives ∇²R_c v, at every θ it is bound to."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hessian_problems import SignBranch
from implicitlab.diagnostics.linearized import TangentProgram

# float64, entries O(1): the program performs the same aten operations as jvp(grad(·)), so it
# agrees with the dense reference to rounding; 1e-10 relative to max |H| leaves room for the
# different summation order of torch.func.hessian (reverse-over-forward over the whole vector)
RTOL = 1e-10


def problem():
    """A model with a frozen parameter and buffers (batch norm in eval mode), and one chunk."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    model[0].bias.requires_grad_(False)
    model.eval()
    X, y = torch.randn(9, 3, dtype=torch.float64), torch.randint(0, 2, (9,))
    return model, X, y


def split(model):
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    constants = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    constants.update({n: b.detach() for n, b in model.named_buffers()})
    return trainable, constants


def chunk_loss_of(model):
    return lambda params, Xc, yc: F.cross_entropy(functional_call(model, params, (Xc,)), yc)


def dense_hessian(model, trainable, constants, X, y) -> torch.Tensor:
    params = dict(model.named_parameters())
    shapes, sizes = [params[n].shape for n in trainable], [params[n].numel() for n in trainable]
    flat = torch.cat([params[n].detach().reshape(-1) for n in trainable])

    def loss(theta):
        variables = {n: t.view(s) for n, t, s in zip(trainable, torch.split(theta, sizes), shapes)}
        return chunk_loss_of(model)({**constants, **variables}, X, y)

    return torch.func.hessian(loss)(flat)


def program_matrix(program, trainable, params, X, y) -> torch.Tensor:
    """Columns H e_j from one bind (the primal work) and D tangent runs."""
    boundary = program.bind(params, X, y)
    shapes = [params[n].shape for n in trainable]
    sizes = [params[n].numel() for n in trainable]
    D = sum(sizes)
    columns = []
    for e in torch.eye(D, dtype=torch.float64):
        tangents = [t.view(s) for t, s in zip(torch.split(e, sizes), shapes)]
        columns.append(torch.cat([o.reshape(-1) for o in program.apply(boundary, tangents)]))
    return torch.stack(columns, dim=1)


def assert_close_to(got, ref):
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))


def test_program_matches_torch_func_hessian():
    model, X, y = problem()
    trainable, constants = split(model)
    params = {**constants, **{n: p.detach() for n, p in model.named_parameters() if p.requires_grad}}
    zeros = {n: torch.zeros_like(params[n]) for n in trainable}
    program = TangentProgram(chunk_loss_of(model), trainable, list(constants), (params, zeros, X, y))
    H = program_matrix(program, trainable, params, X, y)
    assert H.dtype == torch.float64 and H.shape == (37, 37)  # 15 + 5 + 5 + 10 + 2 trainable entries (bias 0 frozen)
    assert_close_to(H, dense_hessian(model, trainable, constants, X, y))
    # the split: the tangent part is a strict part of the traced product, fed by the boundary
    assert program.boundary_count > 0 and len(program.tangent.graph.nodes) < program.num_nodes


def test_program_is_bound_again_at_a_new_point():
    """One trace serves every θ (and buffer values) of the same shapes: only bind runs again."""
    model, X, y = problem()
    trainable, constants = split(model)
    params = {**constants, **{n: p.detach() for n, p in model.named_parameters() if p.requires_grad}}
    params = {n: t.clone() for n, t in params.items()}  # the first point, kept apart from the model
    zeros = {n: torch.zeros_like(params[n]) for n in trainable}
    program = TangentProgram(chunk_loss_of(model), trainable, list(constants), (params, zeros, X, y))
    with torch.no_grad():
        model[0].weight.mul_(1.7)
        model[1].running_mean.add_(0.2)
    trainable, constants = split(model)
    moved = {**constants, **{n: p.detach() for n, p in model.named_parameters() if p.requires_grad}}
    ref = dense_hessian(model, trainable, constants, X, y)
    assert not torch.allclose(ref, program_matrix(program, trainable, params, X, y))
    assert_close_to(program_matrix(program, trainable, moved, X, y), ref)


def test_a_branch_on_values_fails_the_trace_instead_of_being_frozen():
    torch.manual_seed(0)
    model = SignBranch().double()
    params = {n: p.detach() for n, p in model.named_parameters()}
    zeros = {n: torch.zeros_like(p) for n, p in params.items()}
    X, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    with pytest.raises(RuntimeError):  # GuardOnDataDependentSymNode: fake tensors have no values
        TangentProgram(chunk_loss_of(model), list(params), [], (params, zeros, X, y))
