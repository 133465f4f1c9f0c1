"""poggio2018-fig1/-fig2/-fig5 (CIFAR-10) and their shared helpers, on a tiny fake CIFAR built in tmp_path
(the training loop they use is tested in tests/train/test_minibatch.py).

The fake set is in the official pickle format: 6 training and 2 test images per class, each class a
colour of its own plus noise, so the nets can fit it in a few steps. Nothing here reads real data.
"""

import dataclasses
import itertools
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from implicitlab.config import ConfigError
from implicitlab.data import DataError, balanced_subset
from implicitlab.experiments.poggio2018 import cifar, fig1_cifar, fig2_cifar, fig5_cifar
from implicitlab.models.convnet import poggio_fig1_net
from implicitlab.seeds import derive_seed

TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 2


def _fake_split(per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), per_class)
    rng.shuffle(labels)  # classes interleaved, as in the official batches
    colours = np.random.default_rng(123).integers(0, 256, size=(10, 3))  # one colour per class, both splits
    images = colours[labels][:, None, None, :] + rng.normal(0, 20, size=(len(labels), 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def _write_batch(path, images, labels):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 3072): R, G, B planes
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": [int(v) for v in labels]}, f, protocol=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    d = root / "cifar-10-batches-py"
    d.mkdir()
    _write_batch(d / "data_batch_1", *_fake_split(TRAIN_PER_CLASS, 1))
    _write_batch(d / "test_batch", *_fake_split(TEST_PER_CLASS, 2))
    return str(root)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPLICITLAB_CACHE", str(tmp_path / "cache"))  # never the user's cache


@pytest.fixture
def arrays(data_dir):
    return cifar.load_arrays(data_dir)


# --------------------------------------------------------------------------- helpers


def test_prepare_balanced_nested_standardised_on_device(arrays):
    small = cifar.prepare(arrays, 20, n_test=10, seed=3)
    big = cifar.prepare(arrays, 40, seed=3)
    assert small.x.shape == (20, 3, 32, 32) and small.x.dtype == torch.float32
    assert small.y.dtype == torch.int64 and small.x_test.shape == (10, 3, 32, 32) and big.n_test == 20
    assert np.bincount(small.y.numpy(), minlength=10).tolist() == [2] * 10
    means = small.x.double().mean(dim=(0, 2, 3))
    assert means.abs().max() < 1e-5  # standardised with the training subset's statistics
    # nested: every training image of n = 20 is among those of n = 40 (raw pixels compared)
    idx20 = balanced_subset(arrays.train_labels, 20, seed=3, num_classes=10)
    idx40 = balanced_subset(arrays.train_labels, 40, seed=3, num_classes=10)
    assert set(idx20) <= set(idx40)
    rand_a = cifar.prepare(arrays, 40, random_label_fraction=1.0, seed=3)
    rand_b = cifar.prepare(arrays, 40, random_label_fraction=1.0, seed=3)
    assert torch.equal(rand_a.y, rand_b.y) and torch.equal(rand_a.y_clean, big.y)
    assert not torch.equal(rand_a.y, big.y)
    f64 = cifar.prepare(arrays, 20, dtype=torch.float64)
    assert f64.x.dtype == torch.float64


def test_permutation_error_sd_is_exact():
    confusion = np.random.default_rng(0).integers(0, 30, size=(5, 5))
    m = confusion.sum()
    errors = [1 - sum(confusion[k, p[k]] for k in range(5)) / m for p in itertools.permutations(range(5))]
    assert cifar.permutation_error_sd(confusion) == pytest.approx(np.std(errors), rel=1e-12)
    assert cifar.permutation_error_sd(np.full((10, 10), 7)) == pytest.approx(0.0, abs=1e-15)  # no structure


def test_build_model_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = cifar.build_model(poggio_fig1_net, 5, dtype=torch.float32, device="cpu")
    b = cifar.build_model(poggio_fig1_net, 5, dtype=torch.float32, device="cpu")
    c = cifar.build_model(poggio_fig1_net, 6, dtype=torch.float32, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    conv = a.features[0]
    assert torch.all(conv.bias == 0)  # He-normal init: zero biases, std √(2/fan_in)
    assert float(a.features[2].weight.detach().std()) == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.1)
    with pytest.raises(ValueError, match="init"):
        cifar.build_model(poggio_fig1_net, 0, init="xavier", dtype=torch.float32, device="cpu")


def test_prepare_stores_images_channels_last_on_the_cpu(arrays):
    data = cifar.prepare(arrays, 20, n_test=10)
    assert cifar.preferred_memory_format("cpu") == torch.channels_last
    assert data.x.is_contiguous(memory_format=torch.channels_last) and not data.x.is_contiguous()
    assert data.x_test.is_contiguous(memory_format=torch.channels_last)
    plain = cifar.prepare(arrays, 20, n_test=10, memory_format=torch.contiguous_format)
    assert plain.x.is_contiguous() and torch.equal(plain.x, data.x) and torch.equal(plain.x_test, data.x_test)


# --------------------------------------------------------------------------- experiments


def _tiny(module, data_dir, **changes):
    return dataclasses.replace(module.PRESETS["tiny"], data_dir=data_dir, **changes)


def _check_progress(fractions):
    assert fractions and fractions[-1] == pytest.approx(1.0)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(fractions))  # monotone


def _check_claims(found):
    assert found
    for c in found:
        assert c.source and c.statement and c.basis
        assert c.verdict in ("holds", "refuted", "uninformative", "no data")


@pytest.mark.parametrize("module", [fig1_cifar, fig2_cifar, fig5_cifar])
def test_presets_are_valid_and_full_is_the_papers(module):
    assert {"tiny", "quick", "full"} <= set(module.PRESETS)
    full = module.PRESETS["full"]
    assert full.dtype == "float32" and full.data_dir is None and full.n_test is None


def test_fig1_tiny_runs_plots_and_claims(data_dir):
    fractions = []
    cfg = _tiny(fig1_cifar, data_dir)
    table = fig1_cifar.run(cfg, progress=fractions.append)
    _check_progress(fractions)
    assert len(table) == 8 and set(table.labels) == {"true", "random"} and set(table.n) == {20, 40}
    assert sorted(set(table.seed)) == [0, 1]  # repetitions = 2: seeds seed, seed + 1
    assert table.train_error.between(0, 1).all() and table.test_error.between(0, 1).all()
    assert (table.num_params == 9_898).all() and (table.steps == 3 * table.n // 10).all()
    names = {c.name for c in fig1_cifar.claims(table)}
    assert "random labels: test error at chance" in names and "true labels: test error falls as n grows" in names
    _check_claims(fig1_cifar.claims(table))
    assert len(fig1_cifar.plot(table).axes) == 2
    assert table.equals(fig1_cifar.run(cfg))  # deterministic


def test_fig2_tiny_runs_plots_and_claims(data_dir):
    fractions = []
    table = fig2_cifar.run(_tiny(fig2_cifar, data_dir, repetitions=2), progress=fractions.append)
    _check_progress(fractions)
    assert len(table) == 6 and sorted(set(table.num_params)) == [754, 2_650, 9_898]
    assert sorted(set(table.seed)) == sorted(derive_seed(0, "init", r) for r in (0, 1))  # one init per repetition
    found = fig2_cifar.claims(table)
    _check_claims(found)
    assert all(c.verdict != "no data" for c in found)  # P ≥ n = 40 for every width
    assert len(fig2_cifar.plot(table).axes) == 2


def test_fig5_tiny_perturbs_at_zero_training_error(data_dir):
    fractions = []
    cfg = _tiny(fig5_cifar, data_dir)
    table = fig5_cifar.run(cfg, progress=fractions.append)
    _check_progress(fractions)
    assert (table.seed == 0).all()
    start = int(table.start_epoch.iloc[0])
    fit_row = table[(table.branch == "fit") & (table.epoch == start)].iloc[0]
    assert fit_row.train_error == 0.0  # the perturbations begin at a zero of the training error
    jumps = table[table.after_perturbation]
    assert (jumps.branch == "perturbed").all()
    assert jumps.epoch.tolist() == list(range(start, cfg.perturb_until + 1, cfg.perturb_every))
    assert jumps.perturbations.tolist() == list(range(1, len(jumps) + 1))
    assert jumps.test_error.isna().all()
    control = table[table.branch == "control"]
    assert (control.perturbations == 0).all() and control.epoch.max() == cfg.epochs
    # the perturbation raises the norm (E‖θ + δ‖² = ‖θ‖² + ‖δ‖²), and the run forks from the same weights
    pre = table[(table.branch == "perturbed") & ~table.after_perturbation].set_index("epoch")
    first = jumps.iloc[0]
    assert first.norm > fit_row.norm
    assert control[control.epoch == cfg.epochs].norm.iloc[0] != pre.loc[cfg.epochs].norm
    found = fig5_cifar.claims(table)
    assert len(found) == 8 and all(c.verdict != "no data" for c in found)
    _check_claims(found)
    assert len(fig5_cifar.plot(table).axes) == 6


def test_fig5_never_fitted_reports_no_data(data_dir):
    cfg = _tiny(fig5_cifar, data_dir, lr=1e-6, epochs=12, perturb_every=2, perturb_until=6)
    table = fig5_cifar.run(cfg)
    assert table.start_epoch.isna().all() and (table.branch == "fit").all()
    found = fig5_cifar.claims(table)
    assert found and all(c.verdict == "no data" for c in found)
    fig5_cifar.plot(table)


@pytest.mark.parametrize(
    "module, changes, match",
    [
        (fig1_cifar, {"ns": (100,)}, "two"),
        (fig1_cifar, {"ns": (200, 100)}, "increasing"),
        (fig1_cifar, {"ns": (100, 60_000)}, "50000"),
        (fig1_cifar, {"label_kinds": ("noisy",)}, "label_kinds"),
        (fig1_cifar, {"lr": -0.1}, "lr"),
        (fig1_cifar, {"momentum": 1.0}, "momentum"),
        (fig1_cifar, {"dtype": "float16"}, "dtype"),
        (fig1_cifar, {"init": "xavier"}, "init"),
        (fig2_cifar, {"widths": (1.0, 1.01)}, "increasing channel"),
        (fig2_cifar, {"n_test": 20_000}, "n_test"),
        (fig5_cifar, {"perturb_until": 9_950}, "perturb_until"),
        (fig5_cifar, {"perturb_scale": 0.0}, "perturb_scale"),
        (fig5_cifar, {"start_error": 1.0}, "start_error"),
        (fig5_cifar, {"repetitions": 0}, "repetitions"),
        (fig1_cifar, {"repetitions": 0}, "repetitions"),
    ],
)
def test_configs_reject_bad_values(module, changes, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(module.PRESETS["full"], **changes)


def test_missing_data_names_the_path(tmp_path):
    cfg = _tiny(fig1_cifar, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere"):
        fig1_cifar.run(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fig5_tiny_on_cuda_matches_cpu_start(data_dir):
    cfg = _tiny(fig5_cifar, data_dir)
    cpu = fig5_cifar.run(cfg, device=torch.device("cpu"))
    gpu = fig5_cifar.run(cfg, device=torch.device("cuda"))
    def first(t):  # same init and data on both devices
        return t[t.branch == "fit"].iloc[0]

    assert first(gpu).train_loss == pytest.approx(first(cpu).train_loss, rel=1e-4)
