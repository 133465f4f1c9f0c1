"""Mini-batch SGD of an nn.Module on in-memory tensors: chunked full-batch gradients, evaluation,
determinism, layouts, and the foreach SGD against the reference loop bit for bit.

Data: small synthetic "images" (one colour per class plus noise, standardised), made here; the
nets are the Poggio et al. CNNs, initialised from a seed without touching the global generator.
"""

import numpy as np
import pytest
import torch

from implicitlab.models.convnet import poggio_fig1_net, poggio_fig5_net
from implicitlab.train.minibatch import (
    Evaluation,
    evaluate,
    fit,
    full_batch_gradient,
    gather_rows,
    make_optimizer,
    run_epoch,
)


def _images(n: int, *, dtype=torch.float32, memory_format=torch.contiguous_format, seed: int = 0):
    """(n, 3, 32, 32) standardised images of 10 balanced classes, labels (n,) int64."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    colours = torch.rand(10, 3, 1, 1, generator=torch.Generator().manual_seed(123))
    x = colours[y] + 0.1 * torch.randn(n, 3, 32, 32, generator=g)
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    return x.to(dtype).contiguous(memory_format=memory_format), y


def _net(factory, seed: int, dtype=torch.float32):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
        for m in model.modules():  # He-normal, zero biases: the nets learn within a few epochs
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                torch.nn.init.zeros_(m.bias)
    return model.to(dtype)


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_full_batch_gradient_in_chunks_equals_one_pass():
    x, y = _images(40, dtype=torch.float64)
    model = _net(poggio_fig5_net, 0, torch.float64)
    state = full_batch_gradient(model, x, y, chunk_size=7)  # 7 does not divide 40
    chunked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for a, b in zip(chunked, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    ref = evaluate(model, x, y)
    assert isinstance(state, Evaluation) and state.m == 40 and state.confusion is None
    assert state.error == ref.error and state.loss == pytest.approx(ref.loss, rel=1e-12)
    assert state.loss_sd == pytest.approx(ref.loss_sd, rel=1e-9)


def test_evaluate_error_loss_confusion():
    x, y = _images(40)
    model = _net(poggio_fig1_net, 1)
    ev = evaluate(model, x, y, batch_size=15)
    with torch.no_grad():
        logits = model(x)
    assert ev.error == pytest.approx(float((logits.argmax(-1) != y).double().mean()))
    ce = torch.nn.functional.cross_entropy(logits.double(), y, reduction="none")
    assert ev.loss == pytest.approx(float(ce.mean()), rel=1e-6)
    assert ev.loss_sd == pytest.approx(float(ce.std(correction=0)), rel=1e-5)
    assert ev.confusion.shape == (10, 10) and ev.confusion.dtype == np.int64 and ev.confusion.sum() == 40
    assert ev.error == pytest.approx(1 - np.trace(ev.confusion) / 40)
    assert model.training  # evaluate restores the mode
    model.eval()
    evaluate(model, x, y)
    assert not model.training


def test_sgd_is_deterministic_and_learns():
    x, y = _images(60)
    runs = []
    for _ in range(2):
        model = _net(poggio_fig1_net, 0)
        before = evaluate(model, x, y).loss
        fractions = []
        assert fit(model, x, y, epochs=15, batch_size=10, lr=0.02, momentum=0.9, seed=4,
                   progress=fractions.append) is model
        runs.append(_flat(model))
    assert fractions == pytest.approx([(e + 1) / 15 for e in range(15)])
    assert torch.equal(runs[0], runs[1])
    assert evaluate(model, x, y).loss < before


def test_full_batch_epoch_is_one_gd_step():
    x, y = _images(30, dtype=torch.float64)
    a, b = _net(poggio_fig5_net, 2, torch.float64), _net(poggio_fig5_net, 2, torch.float64)
    before = run_epoch(a, make_optimizer(a, 0.1), x, y, batch_size=None, chunk_size=8)
    torch.nn.functional.cross_entropy(b(x), y).backward()
    with torch.no_grad():
        for p in b.parameters():
            p -= 0.1 * p.grad
    torch.testing.assert_close(_flat(a), _flat(b), rtol=1e-12, atol=1e-14)
    assert before.m == 30  # the error and loss of the weights before the step
    assert run_epoch(a, make_optimizer(a, 0.1), x, y, batch_size=10, generator=torch.Generator()) is None


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gather_rows_is_indexing_in_the_same_layout(memory_format):
    x = torch.randn(7, 3, 4, 5).contiguous(memory_format=memory_format)
    idx = torch.tensor([4, 0, 4, 6])
    rows = gather_rows(x, idx)
    assert torch.equal(rows, x[idx]) and rows.is_contiguous(memory_format=memory_format)
    assert torch.equal(gather_rows(x[:, :1], idx), x[idx, :1])  # one channel: both layouts at once


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_on_channels_last_data_matches_contiguous(momentum):
    runs = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x, y = _images(60, memory_format=memory_format)
        model = _net(poggio_fig1_net, 0)
        fit(model, x, y, epochs=5, batch_size=10, lr=0.02, momentum=momentum, seed=4)
        runs.append(_flat(model))
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-4, atol=1e-5)  # the same SGD, up to float rounding


def test_make_optimizer_is_the_reference_sgd_bit_for_bit():
    x, y = _images(40, memory_format=torch.channels_last)
    runs = []
    for make in (lambda m: make_optimizer(m, 0.02, 0.9),
                 lambda m: torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9, foreach=False)):
        model = _net(poggio_fig1_net, 0)
        opt, gen = make(model), torch.Generator().manual_seed(1)
        for _ in range(3):
            run_epoch(model, opt, x, y, batch_size=10, generator=gen)
        runs.append(_flat(model))
    assert torch.equal(runs[0], runs[1])
