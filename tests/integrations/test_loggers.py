"""CSV and TensorBoard logging from a real short SGD loop: the logged numbers are the trackers' own."""

import math

import pandas as pd
import pytest
import torch
from torch import nn

from implicitlab.integrations import CSVLogger, MarginNormTracker, SharpnessTracker, as_scalars


def _problem():
    """A small bias-free MLP on seeded ±1-labelled data (logistic loss) and its SGD optimizer."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    y = torch.where(X[:, 0] + 0.5 * X[:, 1] > 0, 1.0, -1.0).to(torch.float64)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.ReLU(), nn.Linear(8, 1, bias=False)).double()
    return model, X, y, torch.optim.SGD(model.parameters(), lr=0.5)


def _train(model, X, y, opt, steps, on_step):
    gen = torch.Generator().manual_seed(2)
    for step in range(steps):
        idx = torch.randperm(X.shape[0], generator=gen)[:8]  # a minibatch of 8
        opt.zero_grad()
        loss = nn.functional.softplus(-y[idx] * model(X[idx]).squeeze(1)).mean()
        loss.backward()
        opt.step()
        on_step(step)


def test_csv_logger_writes_the_trackers_values(tmp_path):
    model, X, y, opt = _problem()
    tracker = SharpnessTracker(model, "logistic", X, y)
    margins = MarginNormTracker(model, X, y)
    with CSVLogger(tmp_path / "logs" / "curvature.csv") as log:
        def on_step(step):
            if step % 5 == 4:
                log.log(step, tracker(step))
                log.log(step, margins(step))
                log.log(step, {"lr": opt.param_groups[0]["lr"]})
        _train(model, X, y, opt, 20, on_step)
    table = pd.read_csv(tmp_path / "logs" / "curvature.csv")
    history = tracker.history_frame()
    assert len(history) == 4 and list(history["step"]) == [4, 9, 14, 19]
    sharp_rows = table.dropna(subset=["sharpness"]).reset_index(drop=True)
    assert list(sharp_rows["step"]) == [4, 9, 14, 19]
    # exact: floats are written by repr
    assert list(sharp_rows["sharpness"]) == list(history["value"])
    assert list(sharp_rows["sharpness_residual"]) == list(history["residual"])
    assert list(sharp_rows["sharpness_num_matvecs"]) == list(history["num_matvecs"].astype(float))
    assert (sharp_rows["sharpness_converged"] == 1.0).all()
    # the sharpness changed along training (the loop really trained)
    assert history["value"].nunique() == 4
    margin_rows = table.dropna(subset=["normalized_margin"]).reset_index(drop=True)
    frame = margins.history_frame()
    assert list(margin_rows["normalized_margin"]) == list(frame["normalized_margin"])
    assert list(margin_rows["param_norm"]) == list(frame["param_norm"])
    assert list(table.dropna(subset=["lr"])["lr"]) == [0.5] * 4
    # the logged value is the sharpness of the final model, computed independently
    import implicitlab as il

    final = il.sharpness(model, "logistic", X, y, tol=1e-10)
    assert sharp_rows["sharpness"].iloc[-1] == pytest.approx(float(final.values[0]), rel=1e-6)


def test_margin_norm_tracker_by_hand_and_model_left_as_found(tmp_path):
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    y = torch.where(X[:, 0] > 0, 1.0, -1.0).to(torch.float64)
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(6, 1, bias=False)).double()
    model.train()
    tracker = MarginNormTracker(model, X, y)
    rec = tracker(step=7)
    assert model.training and all(m.training for m in model.modules())  # mode restored
    W1, W2 = model[0].weight.detach(), model[3].weight.detach()
    with torch.no_grad():
        f = (W2 @ torch.relu(W1 @ X.T)).squeeze(0)  # eval mode: no dropout mask
    m = float((y * f).min())
    fro1, fro2 = float(W1.norm()), float(W2.norm())
    assert rec.min_margin == pytest.approx(m, rel=1e-12)
    assert rec.normalized_margin == pytest.approx(m / (fro1 * fro2), rel=1e-12)
    assert rec.param_norm == pytest.approx(math.hypot(fro1, fro2), rel=1e-12)
    assert rec.spectral == pytest.approx((float(torch.linalg.matrix_norm(W1, 2)),
                                          float(torch.linalg.matrix_norm(W2, 2))), rel=1e-12)
    frame = tracker.history_frame()
    assert list(frame.columns[:7]) == ["call", "step", "min_margin", "normalized_margin", "param_norm",
                                       "frobenius_product", "spectral_product"]
    assert frame["step"].tolist() == [7] and frame["frobenius_1"].iloc[0] == fro1
    assert MarginNormTracker(model, X, y).history_frame().empty
    with pytest.raises(ValueError, match="same, positive number of examples"):
        MarginNormTracker(model, X, y[:3])
    with pytest.raises(ValueError, match="unknown normalization"):
        MarginNormTracker(model, X, y, normalization="nuclear")


def test_as_scalars_refuses_what_it_cannot_log():
    with pytest.raises(TypeError, match="cannot log a str"):
        as_scalars("sharpness")
    with pytest.raises(TypeError, match="'loss': str is not a number"):
        as_scalars({"loss": "low"})


def test_tensorboard_logger_writes_the_trackers_values(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from implicitlab.integrations import TensorBoardLogger

    model, X, y, opt = _problem()
    tracker = SharpnessTracker(model, "logistic", X, y, k=2)
    with TensorBoardLogger(tmp_path / "tb") as tb:
        _train(model, X, y, opt, 20, lambda step: tb.log(step, tracker(step)) if step % 5 == 4 else None)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    history = tracker.history_frame()
    logged = events.Scalars("implicitlab/sharpness")
    assert [e.step for e in logged] == [4, 9, 14, 19]
    # TensorBoard stores scalars as float32
    expected = torch.tensor(history["value"].to_numpy()).float().tolist()
    assert [e.value for e in logged] == expected
    assert [e.value for e in events.Scalars("implicitlab/sharpness_2")] == \
        torch.tensor(history["value_2"].to_numpy()).float().tolist()
    assert [e.value for e in events.Scalars("implicitlab/sharpness_residual")] == \
        torch.tensor(history["residual"].to_numpy()).float().tolist()
