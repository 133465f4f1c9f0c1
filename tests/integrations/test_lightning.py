"""The Lightning callback in a real short Trainer run on CPU: the logged sharpness is the tracker's."""

import pandas as pd
import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning.pytorch")


class Classifier(L.LightningModule):
    """A small MLP (the module's forward is the network), plain SGD, cross-entropy."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.3)


def _data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 4, generator=gen)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()
    return X, y


@pytest.mark.parametrize("model", [None, "net"])
def test_sharpness_callback_logs_the_trackers_value(tmp_path, model):
    from lightning.pytorch.loggers import CSVLogger as LightningCSV

    import implicitlab as il
    from implicitlab.integrations import SharpnessCallback

    X, y = _data()
    torch.manual_seed(1)
    module = Classifier()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(2))
    callback = SharpnessCallback(X, y, "ce", every_n_steps=5, model=model, tol=1e-8)
    trainer = L.Trainer(max_steps=20, logger=LightningCSV(tmp_path, name="run"), callbacks=[callback],
                        accelerator="cpu", devices=1, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, loader)
    history = callback.tracker.history_frame()
    assert list(history["step"]) == [5, 10, 15, 20]
    metrics = pd.read_csv(next(tmp_path.glob("run/version_*/metrics.csv")))
    logged = metrics.dropna(subset=["sharpness"])
    assert list(logged["step"]) == [5, 10, 15, 20]
    # Lightning's CSV logger writes the float it was given
    assert logged["sharpness"].tolist() == pytest.approx(history["value"].tolist(), rel=1e-15)
    assert logged["sharpness_residual"].tolist() == pytest.approx(history["residual"].tolist(), rel=1e-15)
    # the last estimate is the sharpness of the trained network, computed independently
    final = il.sharpness(module.net, "ce", X, y, tol=1e-10)
    assert history["value"].iloc[-1] == pytest.approx(float(final.values[0]), rel=1e-5)


def test_sharpness_callback_every_epoch_and_bad_options(tmp_path):
    from implicitlab.integrations import SharpnessCallback

    X, y = _data()
    torch.manual_seed(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32)
    callback = SharpnessCallback(X, y, "ce", every_n_epochs=2)
    trainer = L.Trainer(max_epochs=4, logger=False, callbacks=[callback], accelerator="cpu", devices=1,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Classifier(), loader)
    assert list(callback.tracker.history_frame()["step"]) == [4, 8]  # 2 steps per epoch, epochs 2 and 4
    with pytest.raises(ValueError, match="exactly one of every_n_steps and every_n_epochs"):
        SharpnessCallback(X, y, "ce")
    with pytest.raises(ValueError, match="must be ≥ 1"):
        SharpnessCallback(X, y, "ce", every_n_steps=0)
