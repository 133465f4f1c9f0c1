"""mode=: every diagnostic measures a declared objective whatever mode a training loop left the
model in, and leaves its parameters, buffers and train/eval flags exactly as found. References
are the objective written out by hand (batch norm's formula, dropout off) under torch.func.hessian."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from implicitlab.diagnostics import (
    HessianOperator,
    NondeterministicHessianError,
    SharpnessTracker,
    explicit_hessian,
    hutchinson_trace,
    sharpness,
    slq_spectral_density,
)

EPS = 1e-5  # BatchNorm1d's default eps
TOL = 1e-8  # Lanczos tolerance of the tracker; a gap-criterion estimate, so compare at 3×


def model_and_data(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.3), nn.Linear(5, 3)
    ).double()
    X, y = torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 3, (40,))
    return model, X, y


def hand_forward(p: dict, buffers: dict, X, batch_stats: bool):
    """Linear → batch norm (running or full-batch statistics) → tanh → (dropout off) → linear."""
    h = X @ p["0.weight"].T + p["0.bias"]
    if batch_stats:
        mean, var = h.mean(0), h.var(0, unbiased=False)
    else:
        mean, var = buffers["1.running_mean"], buffers["1.running_var"]
    h = (h - mean) / torch.sqrt(var + EPS) * p["1.weight"] + p["1.bias"]
    return torch.tanh(h) @ p["4.weight"].T + p["4.bias"]


def hand_hessian(model, X, y, batch_stats: bool) -> torch.Tensor:
    named = list(model.named_parameters())
    names, shapes, sizes = [n for n, _ in named], [p.shape for _, p in named], [p.numel() for _, p in named]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(theta):
        p = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return F.cross_entropy(hand_forward(p, buffers, X, batch_stats), y)

    return torch.func.hessian(f)(flat)


def snapshot(model):
    return (
        {n: b.clone() for n, b in model.named_buffers()},
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: m.training for n, m in model.named_modules()},
        {n: m.track_running_stats for n, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)},
    )


def assert_untouched(model, before):
    after = snapshot(model)
    for old, new in zip(before[:2], after[:2]):  # buffers and parameters, bit for bit
        assert old.keys() == new.keys()
        for n in old:
            assert torch.equal(old[n], new[n]), n
    assert before[2] == after[2] and before[3] == after[3]  # train/eval flags, BN settings


@pytest.mark.parametrize("mode", ["eval", "train_batchnorm"])
@pytest.mark.parametrize("reuse", ["graph", "linearized"])
def test_tracker_in_a_real_sgd_loop(mode, reuse):
    """Built in eval mode, then called with the model back in train mode after each SGD step."""
    model, X, y = model_and_data()
    model.eval()
    tracker = SharpnessTracker(model, "ce", X, y, mode=mode, reuse=reuse, tol=TOL, k=2)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(1)  # the loop's dropout masks
    for step in range(4):
        for idx in torch.arange(40).split(10):  # minibatches in train mode: buffers move here
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
        before = snapshot(model)
        res = tracker(step)
        assert_untouched(model, before)
        assert model.training
        exact = torch.linalg.eigvalsh(hand_hessian(model, X, y, batch_stats=(mode == "train_batchnorm")))
        torch.testing.assert_close(res.values, exact.flip(0)[:2], rtol=3 * TOL, atol=0.0)
    frame = tracker.history_frame()
    assert frame["step"].tolist() == [0, 1, 2, 3] and bool(frame["converged"].all())
    assert int(model[1].num_batches_tracked) == 16  # the loop's 16 steps, none of the tracker's


def test_front_doors_measure_eval_mode_of_a_train_mode_model():
    model, X, y = model_and_data(2)
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    model.train()
    ref = hand_hessian(model, X, y, batch_stats=False)
    before = snapshot(model)
    H = HessianOperator(model, "ce", X, y, chunk_size=7)
    dense = H @ torch.eye(H.dim, dtype=torch.float64)
    torch.testing.assert_close(dense, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
    torch.testing.assert_close(explicit_hessian(model, "ce", X, y), ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
    res = sharpness(model, "ce", X, y, tol=1e-10)
    torch.testing.assert_close(res.values[0], torch.linalg.eigvalsh(ref)[-1], rtol=1e-9, atol=0.0)
    hutchinson_trace(model, "ce", X, y, num_matvecs=3)
    slq = slq_spectral_density(model, "ce", X, y, num_probes=1, num_steps=ref.shape[0])
    assert abs(float(slq.nodes[0].max()) - float(torch.linalg.eigvalsh(ref)[-1])) <= 1e-8 * float(ref.abs().max())
    assert_untouched(model, before)


def test_train_batchnorm_uses_full_batch_statistics():
    model, X, y = model_and_data(3)
    model.train()
    ref = hand_hessian(model, X, y, batch_stats=True)
    assert not torch.allclose(ref, hand_hessian(model, X, y, batch_stats=False))
    before = snapshot(model)
    got = explicit_hessian(model, "ce", X, y, mode="train_batchnorm")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
    H = HessianOperator(model, "ce", X, y, mode="train_batchnorm")
    torch.testing.assert_close(H @ torch.eye(H.dim, dtype=torch.float64), ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
    assert H.chunk_size == 40  # one chunk: the full data set
    assert_untouched(model, before)


def test_train_batchnorm_refuses_chunks_and_loaders():
    model, X, y = model_and_data()
    with pytest.raises(ValueError, match=r"train_batchnorm.*chunk_size=8 < N = 40"):
        HessianOperator(model, "ce", X, y, mode="train_batchnorm", chunk_size=8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=10)
    with pytest.raises(ValueError, match=r"train_batchnorm.*as tensors X, y \(not a loader\)"):
        HessianOperator(model, "ce", loader, mode="train_batchnorm")
    with pytest.raises(ValueError, match="unknown mode 'train'"):
        HessianOperator(model, "ce", X, y, mode="train")


def test_model_mode_keeps_the_old_refusal_and_restores_buffers():
    model, X, y = model_and_data()
    model.train()
    before = snapshot(model)
    with pytest.raises(NondeterministicHessianError, match="Call model.eval\\(\\) first"):
        HessianOperator(model, "ce", X, y, mode="model")
    assert_untouched(model, before)


class Noisy(nn.Module):
    """Random in any mode: no declared mode makes it one function of θ."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x) * (1 + 0.1 * torch.rand(x.shape[0], 1, dtype=x.dtype))


def test_the_probe_names_the_cause_when_the_mode_is_declared():
    torch.manual_seed(0)
    model = Noisy().double()
    X, y = torch.randn(12, 3, dtype=torch.float64), torch.randint(0, 3, (12,))
    with pytest.raises(NondeterministicHessianError, match="objective is measured in mode 'eval'.*cause is elsewhere"):
        HessianOperator(model, "ce", X, y)
