"""poggio2018-norm-criterion and its helpers (``poggio2018/minimizers.py``), on a fake MNIST written in tmp_path.

The fake set is in the official IDX format (gzipped): each class a blocky pattern of its own plus
blocky noise (constant on the 4×4 blocks the tiny preset pools), so the tiny nets fit it, random
labels included, in a few dozen steps. Nothing here reads real data.
"""

import dataclasses
import gzip
import math
import struct

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from implicitlab.config import ConfigError
from implicitlab.experiments import get
from implicitlab.experiments.poggio2018 import minimizers, norm_criterion as nc
from implicitlab.models import Architecture, Ensemble
from implicitlab.seeds import derive_seed
from implicitlab.train import gradient_descent

TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 5


def _idx(array, magic):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def _fake_split(per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), per_class)
    rng.shuffle(labels)
    templates = np.random.default_rng(7).uniform(0, 255, size=(10, 7, 7)).repeat(4, 1).repeat(4, 2)  # (10, 28, 28)
    noise = rng.normal(0, 50, size=(len(labels), 7, 7)).repeat(4, 1).repeat(4, 2)  # survives 4×4 pooling
    images = templates[labels] + noise
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    d = root / "mnist"
    d.mkdir()
    for prefix, per_class, seed in (("train", TRAIN_PER_CLASS, 1), ("t10k", TEST_PER_CLASS, 2)):
        images, labels = _fake_split(per_class, seed)
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images, 2051)))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels, 2049)))
    return str(root)


@pytest.fixture(scope="module")
def tiny_table(data_dir):
    return nc.run(dataclasses.replace(nc.PRESETS["tiny"], data_dir=data_dir))


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("changes, message", [
    ({"n": 5}, "n must lie"),
    ({"n_test": 5}, "n_test must be None"),
    ({"pool": 3}, "pool must divide 28"),
    ({"depth": 1}, "depth must be ≥ 2"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"epsilons": (1e-3,)}, "epsilons must be"),
    ({"epsilons": (1e-3, 1e-3)}, "the two ε must differ"),
    ({"epsilons": (1e-3, 3.0)}, "below log 10"),
    ({"epsilons": (-1e-3, 1e-2)}, "epsilons must be positive"),
    ({"label_fractions": (0.0, 1.0)}, "label_fractions must lie"),
    ({"label_fractions": (0.2, 0.2)}, "distinct"),
    ({"init_scales": (0.0,)}, "init_scales must be positive"),
    ({"inits": 0}, "inits must be"),
    ({"perturb_until": 3_000, "num_steps": 3_000}, "perturb_until < num_steps"),
    ({"common_step": 600}, "perturb_until < common_step"),
    ({"common_step": 3_000}, "common_step < num_steps"),
    ({"bootstrap": 10}, "bootstrap must be"),
    ({"repetitions": 0}, "repetitions must be"),
    ({"dtype": "float16x"}, "dtype"),
])
def test_config_validation(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(nc.PRESETS["quick"], **changes)


def test_presets_are_valid_and_sized():
    assert nc.PRESETS["quick"].minimizers >= 20 and nc.PRESETS["full"].minimizers >= 20
    assert nc.PRESETS["quick"].repetitions >= 3 and nc.PRESETS["full"].repetitions >= 3
    q = nc.PRESETS["quick"]
    assert q.epsilons[0] < math.log(2) / q.n  # reaching the main ε implies zero training error
    assert max(q.epsilons) / min(q.epsilons) == pytest.approx(10.0)  # "a decade"


def test_missing_data_is_a_clear_error(tmp_path):
    from implicitlab.data import DataError

    with pytest.raises(DataError, match="MNIST"):
        nc.run(dataclasses.replace(nc.PRESETS["tiny"], data_dir=str(tmp_path)))


# ------------------------------------------------------------------------------------ ε-stopping


def _separable(n=30, d=6, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(C, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % C
    X = centers[y] + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, y


def test_epsilon_capture_matches_a_plain_gd_loop():
    """The probe's first iterate with L ≤ ε, against GD written out with torch's cross-entropy."""
    X, y = _separable()
    arch = Architecture(kind="mlp", d_in=6, depth=3, width=8, d_out=3, activation="relu")
    scales, seeds = [0.7, 1.0, 1.3], [11, 12, 13]
    eps, lr, steps = (0.05, 0.01), 0.3, 400
    armed = [0, 0, 120]
    model = Ensemble.create(arch, scales, seeds)
    capture = minimizers.EpsilonCapture(model, eps, armed)
    gradient_descent(model, "ce", X, y, lr=lr, num_steps=steps, probe_steps=range(steps + 1), probes=(capture,))
    for r, (s, seed) in enumerate(zip(scales, seeds)):
        ws, _ = arch.init(s, seed)
        ws = [w.clone().requires_grad_(True) for w in ws]
        first = {e: None for e in eps}
        for t in range(steps + 1):
            h = X
            for k, W in enumerate(ws):
                h = h @ W.T
                if k < len(ws) - 1:
                    h = torch.relu(h)
            L = torch.nn.functional.cross_entropy(h, y)
            value = float(L.detach())
            for e in eps:
                if first[e] is None and t >= armed[r] and value <= e:
                    first[e] = (t, [w.detach().clone() for w in ws], value)
            if t == steps:
                break
            grads = torch.autograd.grad(L, ws)
            with torch.no_grad():
                for w, g in zip(ws, grads):
                    w -= lr * g
        for i, e in enumerate(eps):
            assert first[e] is not None, f"run {r} never reached ε = {e}: make the test problem easier"
            t, wt, Lt = first[e]
            assert int(capture.step[i, r]) == t
            assert float(capture.loss[i, r]) == pytest.approx(Lt, rel=1e-10)
            for k in range(arch.depth):
                torch.testing.assert_close(capture.weights[i][k][r], wt[k], rtol=1e-9, atol=1e-12)
    assert int(capture.step[0, 2]) >= 120  # an armed-late run is only stopped from its step on


def test_match_loss_hits_epsilon_and_keeps_the_direction():
    X, y = _separable(seed=2)
    arch = Architecture(kind="mlp", d_in=6, depth=3, width=8, d_out=3, activation="relu")
    model = Ensemble.create(arch, [1.0, 1.2], [3, 4])
    gradient_descent(model, "ce", X, y, lr=0.3, num_steps=600)
    eps = 0.05
    with torch.no_grad():
        out0 = model(X)
        for r in range(2):  # the precondition: the state is already below ε
            assert float(torch.nn.functional.cross_entropy(out0[r], y)) < eps
    a, L = minimizers.match_loss(model, X, y, eps)
    assert bool(((a > 0) & (a <= 1)).all())
    scaled = Ensemble(arch, [w.detach() * a.view(-1, 1, 1) ** (1 / arch.depth) for w in model.weights])
    with torch.no_grad():
        out, out0 = scaled(X), model(X)
        for r in range(2):  # independent: torch's cross-entropy at the scaled weights
            assert float(torch.nn.functional.cross_entropy(out[r], y)) == pytest.approx(eps, rel=1e-10)
            torch.testing.assert_close(out[r], a[r] * out0[r], rtol=1e-12, atol=1e-12)  # homogeneity of degree K
    torch.testing.assert_close(L, torch.full_like(L, eps), rtol=1e-10, atol=0)


def test_match_loss_gives_nan_above_epsilon():
    X, y = _separable(seed=2)
    arch = Architecture(kind="mlp", d_in=6, depth=2, width=4, d_out=3, activation="relu")
    model = Ensemble.create(arch, [1.0], [0])  # untrained: L ≈ log 3 > ε
    a, L = minimizers.match_loss(model, X, y, 1e-3)
    assert math.isnan(float(a[0])) and math.isnan(float(L[0]))


# ------------------------------------------------------------------------------------ rank statistics


def test_vectorised_rank_statistics_match_scipy():
    rng = np.random.default_rng(0)
    for ties in (False, True):
        for _ in range(20):
            x = rng.normal(size=15)
            y = x + rng.normal(size=15)
            if ties:
                x, y = np.round(x), np.round(y * 2) / 2
            assert minimizers.spearman_rho(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
            assert minimizers.kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
    X = rng.normal(size=(5, 12))
    Y = rng.normal(size=(5, 12))
    np.testing.assert_allclose(minimizers.kendall_tau_b(X, Y), [kendalltau(a, b).statistic for a, b in zip(X, Y)],
                               atol=1e-12)


# ------------------------------------------------------------------------------------ the experiment


def test_tiny_runs_with_expected_verdicts(tiny_table):
    t = tiny_table
    cfg = nc.PRESETS["tiny"]
    assert set(t.stop) == set(nc.STOPS)
    assert len(t) == cfg.repetitions * cfg.minimizers * len(nc.STOPS)
    matched = t[t.stop == "matched"]
    assert (matched.loss_at_step <= cfg.epsilons[0]).all()  # the captured iterate is below ε …
    assert ((matched.scale > 0) & (matched.scale <= 1)).all()  # … and moved down the ray to L = ε
    perturbed = matched[matched.perturbed]
    assert (perturbed.step > cfg.perturb_until).all()  # perturbed runs stop after their last perturbation
    assert matched.step.notna().all()  # the fake set is fitted by every run, random labels included
    found = {c.name: c for c in nc.claims(t)}
    assert found["every stopped state has L = ε"].verdict == "holds"
    assert found["every stopped state has L = ε"].measured < 1e-12
    assert found["≥ 20 zero-training-error minimizers per seed"].measured == 8  # tiny has 8 per seed
    # 8 minimizers per seed on a fake set: no prediction holds on 2 of 3 seeds (each could: see the
    # hand-made tables below), and no control does either
    for c in found.values():
        if c.kind == "prediction":
            assert c.verdict == "refuted", c.name
            assert c.control_verdict == "refuted", c.name
    for c in found.values():
        if c.kind == "prediction":
            assert c.control is not None and c.seeds == cfg.repetitions and c.rule.startswith("holds on ≥ 2 of 3")
    fig = nc.plot(t)
    assert len(fig.axes) == 4


def test_norm_product_against_a_direct_computation(tiny_table, data_dir):
    """The table's ∏‖W_k‖_F and ‖θ‖ at initialisation, recomputed from the seeds with torch.linalg.norm."""
    cfg = nc.PRESETS["tiny"]
    t = tiny_table[tiny_table.stop == "init"]
    arch = Architecture(kind="mlp", d_in=(28 // cfg.pool) ** 2, depth=cfg.depth, width=cfg.width, d_out=10,
                        activation="relu")
    cells = [(s, p, i) for s in cfg.init_scales for p in (False, True) for i in range(cfg.inits)]
    for _, row in t.iterrows():
        g, j = divmod(int(row.minimizer), len(cells))
        ws, _ = arch.init(cells[j][0], derive_seed(int(row.seed), "init", g, j), dtype=torch.float32)
        norms = [float(torch.linalg.norm(w.double())) for w in ws]
        assert row.norm_product == pytest.approx(math.prod(norms), rel=1e-12)
        assert row.param_norm == pytest.approx(math.sqrt(sum(v * v for v in norms)), rel=1e-12)
        assert row.init_scale == cells[j][0] and bool(row.perturbed) == cells[j][1]


def test_measure_scales_to_epsilon_and_multiplies_the_product(data_dir):
    """At a matched state the product is a*·∏‖W_k‖_F of the captured weights (homogeneity)."""
    cfg = nc.PRESETS["tiny"]
    arrays = minimizers.load_mnist_arrays(data_dir)
    data = minimizers.mnist_tensors(arrays, 40, n_test=40, pool=4, seed=0, dtype=torch.float64, device="cpu")
    arch = Architecture(kind="mlp", d_in=49, depth=2, width=16, d_out=10, activation="relu")
    model = Ensemble.create(arch, [1.0, 1.0], [0, 1])
    gradient_descent(model, "ce", data.x, data.y, lr=0.5, num_steps=150)
    m = nc._measure(arch, list(model.weights), data, data.y, 0.1, sharp=False, tol=cfg.sharpness_tol)
    direct = torch.stack([torch.linalg.norm(w.detach(), dim=(-2, -1)) for w in model.weights]).prod(0)
    torch.testing.assert_close(m["norm_product"], m["scale"] * direct, rtol=1e-12, atol=0)
    torch.testing.assert_close(m["loss"], torch.full((2,), 0.1, dtype=torch.float64), rtol=1e-10, atol=0)


def _synthetic_table(score_of, seeds=(0, 1, 2), m=24, seed=0):
    """A table shaped like run's, built by hand: test error = a rank-preserving function of u, the
    other columns as ``score_of(stop, u, rng)``."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in seeds:
        u = rng.uniform(size=m)
        for stop in nc.STOPS:
            eps = {"matched": 1e-3, "matched_other": 1e-2}.get(stop, math.nan)
            vals = score_of(stop, u, rng)
            for j in range(m):
                rows.append({"seed": s, "minimizer": j, "label_fraction": 0.0, "init_scale": 1.0, "perturbed": False,
                             "init": 0, "stop": stop, "epsilon": eps, "step": 10.0, "loss_at_step": eps,
                             "scale": 1.0, "loss": eps if math.isfinite(eps) else 1e-4, "train_error": 0.0,
                             "test_error": 0.1 + 0.2 * u[j], "norm_product": vals["norm"][j],
                             "param_norm": vals["param"][j], "inverse_margin": vals["norm"][j],
                             "sharpness": vals["sharp"][j], "sharpness_residual": 1e-9, "sharpness_converged": 1.0})
    t = pd.DataFrame(rows)
    t["n"], t["n_test"], t["depth"], t["num_steps"], t["bootstrap"] = 100, 100, 3, 10, 500
    return t


def test_claims_read_only_the_table(monkeypatch):
    """Claims from a hand-made table, with every way to train or load data disabled."""
    def boom(*a, **k):
        raise AssertionError("claims must not train or load data")

    monkeypatch.setattr(nc, "gradient_descent", boom)
    monkeypatch.setattr(nc, "load_mnist_arrays", boom)
    monkeypatch.setattr(nc, "run", boom)

    def informative(stop, u, rng):  # the product ranks the error at the matched ε; the rest is noise
        noise = rng.uniform(size=len(u))
        norm = 10 + 5 * u if stop in ("matched", "matched_other") else 10 + 5 * noise
        return {"norm": norm, "param": 3 + rng.uniform(size=len(u)), "sharp": rng.uniform(size=len(u))}

    found = {c.name: c for c in nc.claims(_synthetic_table(informative))}
    assert found["∏‖W_k‖_F at L = ε ranks the test error (Spearman ρ)"].verdict == "holds"
    assert found["∏‖W_k‖_F at L = ε ranks the test error (Kendall τ_b)"].verdict == "holds"
    assert found["the ranking is stable when ε moves a decade"].verdict == "holds"
    assert found["matched ε predicts better than a common step count"].verdict == "holds"
    assert found["matched ε predicts better than an earlier common step count"].verdict == "holds"
    assert found["∏‖W_k‖_F predicts better than ‖θ‖₂ at the same ε"].verdict == "holds"
    assert found["∏‖W_k‖_F predicts better than sharpness at the same ε"].verdict == "holds"
    assert found["≥ 20 zero-training-error minimizers per seed"].verdict == "holds"

    def uninformative(stop, u, rng):  # nothing ranks the error
        return {"norm": rng.uniform(size=len(u)), "param": rng.uniform(size=len(u)), "sharp": rng.uniform(size=len(u))}

    found = {c.name: c for c in nc.claims(_synthetic_table(uninformative, seed=3))}
    assert found["∏‖W_k‖_F at L = ε ranks the test error (Spearman ρ)"].verdict == "refuted"
    assert found["the ranking is stable when ε moves a decade"].verdict == "refuted"


def test_claims_exclude_minimizers_with_training_errors():
    def informative(stop, u, rng):
        return {"norm": 10 + 5 * u, "param": 3 + 0 * u, "sharp": 1 + 0 * u}

    t = _synthetic_table(informative)
    t.loc[(t.stop == "matched") & (t.minimizer < 6), "train_error"] = 0.05
    found = {c.name: c for c in nc.claims(t)}
    assert found["≥ 20 zero-training-error minimizers per seed"].measured == 18


def test_registered():
    assert get("poggio2018-norm-criterion").config_type is nc.NormCriterionConfig
