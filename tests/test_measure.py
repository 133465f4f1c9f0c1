"""``implicitlab measure`` on a user-defined module in a temporary directory: the library's numbers, or one
line and exit code 2 before any compute."""

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import implicitlab as il
from implicitlab.cli import app
from implicitlab.measure import MeasureError, measure, prepare

runner = CliRunner()

USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Net(nn.Module):
        # registered out of forward order, with biases and batch norm: an ordinary user's model
        def __init__(self, width=6):
            super().__init__()
            self.head = nn.Linear(width, 3)
            self.norm = nn.BatchNorm1d(width)
            self.body = nn.Linear(4, width)

        def forward(self, x):
            return self.head(torch.tanh(self.norm(self.body(x))))


    def make_model():
        return Net()


    def make_plain():  # bias-free, homogeneous: margins and norms mean what they say
        return nn.Sequential(nn.Linear(4, 5, bias=False), nn.ReLU(), nn.Linear(5, 1, bias=False))


    def broken():
        raise RuntimeError("no GPU here\\nsecond line")

    def returns_tensor():
        return torch.zeros(3)

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def user(tmp_path):
    """A user's folder: model file, a trained-looking checkpoint, data as .pt and .npz."""
    (tmp_path / "usermodel.py").write_text(USER_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        spec = importlib.util.spec_from_file_location("usermodel_for_test", tmp_path / "usermodel.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    model = mod.make_model()
    model.train()
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(40, 4, generator=gen)
    y = torch.randint(0, 3, (40,), generator=gen)
    with torch.no_grad():
        model(X)  # move the batch-norm running statistics away from their init
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save({"X": X, "y": y}, tmp_path / "data.pt")
    np.savez(tmp_path / "data.npz", X=X.numpy(), y=y.numpy())
    plain = mod.make_plain()
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    ypm = torch.where(X[:, 0] > 0, 1.0, -1.0)
    torch.save({"X": X, "y": ypm}, tmp_path / "binary.pt")
    return tmp_path, mod, model, plain, X, y, ypm


def _invoke(args):
    result = runner.invoke(app, ["measure", *args], env={"COLUMNS": "250"})
    return result


def _reference_model(mod, path, factory="make_model"):
    model = getattr(mod, factory)()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval().to(torch.float64)


def test_json_sharpness_equals_il_sharpness_on_the_same_model(user, tol):
    folder, mod, _, _, X, y, _ = user
    for data in ("data.pt", "data.npz"):
        result = _invoke([f"{folder}/usermodel.py:make_model", "--checkpoint", str(folder / "model.pt"),
                          "--data", str(folder / data), "--loss", "ce", "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        ref = il.sharpness(_reference_model(mod, folder / "model.pt"), "ce", X.double(), y)
        s = out["sharpness"]
        assert {"value", "residual", "converged", "num_matvecs", "error_bound"} <= set(s)
        # the same operator, start vector and solver: equal up to one rounding
        assert s["value"] == pytest.approx(float(ref.values[0]), rel=tol[torch.float64])
        assert s["residual"] == pytest.approx(float(ref.residuals[0]), rel=1e-6, abs=1e-15)
        assert s["converged"] is True and s["num_matvecs"] == ref.num_matvecs
        assert out["problem"]["num_params"] == sum(p.numel() for p in mod.make_model().parameters())


def test_module_callable_form_and_every_metric(user, tol, monkeypatch):
    folder, mod, _, plain, X, _, ypm = user
    monkeypatch.chdir(folder)  # `module:callable` is imported relative to where the command runs
    result = _invoke(["usermodel:make_plain", "--checkpoint", "plain.pt", "--data", "binary.pt", "--loss",
                      "logistic", "--metrics", "norms,margin,trace,spectrum,sharpness", "--json",
                      "--trace-matvecs", "50"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == ["problem", "sharpness", "spectrum", "trace", "margin", "norms"]
    ref = plain.eval().double()
    Xd = X.double()
    H = il.explicit_hessian(ref, "logistic", Xd, ypm.double())
    eig = torch.linalg.eigvalsh(H)
    assert out["spectrum"]["method"] == "explicit" and out["spectrum"]["dim"] == 25
    assert out["spectrum"]["max"] == pytest.approx(float(eig[-1]), rel=1e-10)
    assert out["spectrum"]["trace"] == pytest.approx(float(H.trace()), rel=1e-10)
    assert out["sharpness"]["value"] == pytest.approx(float(eig[-1]), rel=1e-6)
    est = il.hutchinson_trace(ref, "logistic", Xd, ypm.double(), num_matvecs=50, seed=0)
    assert out["trace"]["value"] == pytest.approx(est.value, rel=tol[torch.float64])
    assert out["trace"]["stderr"] == pytest.approx(est.stderr, rel=1e-9)
    # norms and margin by hand
    W1, W2 = ref[0].weight.detach(), ref[2].weight.detach()
    fro = [float(W1.norm()), float(W2.norm())]
    assert out["norms"]["frobenius"] == pytest.approx(fro, rel=1e-12)
    assert out["norms"]["param_norm"] == pytest.approx(float(torch.cat([W1.flatten(), W2.flatten()]).norm()),
                                                       rel=1e-12)
    with torch.no_grad():
        m = float((ypm.double() * ref(Xd).squeeze(1)).min())
    assert out["margin"]["min_margin"] == pytest.approx(m, rel=1e-12)
    assert out["margin"]["normalized_margin"] == pytest.approx(m / (fro[0] * fro[1]), rel=1e-12)


def test_tables_without_json(user):
    folder = user[0]
    result = _invoke([f"{folder}/usermodel.py:make_model", "--checkpoint", str(folder / "model.pt"),
                      "--data", str(folder / "data.pt"), "--loss", "ce"])
    assert result.exit_code == 0, result.output
    assert "sharpness" in result.stdout and "residual" in result.stdout and "yes" in result.stdout


def test_python_api_prepare_measure(user):
    folder, mod, _, _, X, y, _ = user
    problem = prepare(f"{folder}/usermodel.py:make_model", folder / "model.pt", folder / "data.pt", "ce",
                      metrics="sharpness")
    assert problem.model.training is False and problem.X.dtype == torch.float64
    out = measure(problem)
    ref = il.sharpness(_reference_model(mod, folder / "model.pt"), "ce", X.double(), y)
    assert out["sharpness"]["value"] == pytest.approx(float(ref.values[0]), rel=1e-12)
    with pytest.raises(MeasureError, match="--k must be between 1"):
        measure(problem, k=0)


def _bad_files(folder):
    """Bad inputs written next to the good ones."""
    torch.save({"X": torch.randn(10, 7), "y": torch.zeros(10, dtype=torch.long)}, folder / "wide.pt")
    torch.save({"X": torch.randn(10, 4), "y": torch.zeros(9, dtype=torch.long)}, folder / "short.pt")
    torch.save({"X": torch.randn(10, 4)}, folder / "noy.pt")
    torch.save({"X": torch.randn(10, 4), "y": torch.zeros(10, 1, dtype=torch.long)}, folder / "col.pt")
    X = torch.randn(10, 4)
    X[3, 1] = float("nan")
    torch.save({"X": X, "y": torch.zeros(10, dtype=torch.long)}, folder / "nan.pt")
    np.savez(folder / "noX.npz", x=np.zeros((3, 4)), y=np.zeros(3))
    (folder / "garbage.pt").write_bytes(b"not a torch file")
    (folder / "data.csv").write_text("1,2\n")
    state = torch.load(folder / "model.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "head.bias"}, folder / "missing.pt")
    torch.save({**state, "extra.weight": torch.zeros(2)}, folder / "unexpected.pt")
    torch.save({**state, "body.weight": torch.zeros(6, 5)}, folder / "shape.pt")
    torch.save([1, 2, 3], folder / "list.pt")
    (folder / "syntax.py").write_text("def f(:\n")


@pytest.mark.parametrize(
    "model,checkpoint,data,loss,extra,message",
    [
        ("{f}/nofile.py:make_model", "model.pt", "data.pt", "ce", [], "no file"),
        ("{f}/syntax.py:f", "model.pt", "data.pt", "ce", [], "importing"),
        ("no_such_module_xyz:make", "model.pt", "data.pt", "ce", [], "cannot import module 'no_such_module_xyz'"),
        ("{f}/usermodel.py:nothing", "model.pt", "data.pt", "ce", [], "has no attribute 'nothing'"),
        ("{f}/usermodel.py:NOT_CALLABLE", "model.pt", "data.pt", "ce", [], "not a callable"),
        ("{f}/usermodel.py:broken", "model.pt", "data.pt", "ce", [], "RuntimeError: no GPU here"),
        ("{f}/usermodel.py:returns_tensor", "model.pt", "data.pt", "ce", [], "not a torch.nn.Module"),
        ("usermodel.py", "model.pt", "data.pt", "ce", [], "expected module:callable"),
        ("{f}/usermodel.py:make_model", "missing.pt", "data.pt", "ce", [], "missing keys [head.bias]"),
        ("{f}/usermodel.py:make_model", "unexpected.pt", "data.pt", "ce", [], "unexpected keys [extra.weight]"),
        ("{f}/usermodel.py:make_model", "shape.pt", "data.pt", "ce", [],
         "shape mismatch [body.weight: checkpoint (6, 5), model (6, 4)]"),
        ("{f}/usermodel.py:make_model", "list.pt", "data.pt", "ce", [], "expected a state_dict"),
        ("{f}/usermodel.py:make_model", "garbage.pt", "data.pt", "ce", [], "not a torch state_dict file"),
        ("{f}/usermodel.py:make_model", "nockpt.pt", "data.pt", "ce", [], "no such file"),
        ("{f}/usermodel.py:make_model", "model.pt", "wide.pt", "ce", [], "X of shape (10, 7) does not fit"),
        ("{f}/usermodel.py:make_model", "model.pt", "short.pt", "ce", [], "same number of examples"),
        ("{f}/usermodel.py:make_model", "model.pt", "noy.pt", "ce", [], "missing key(s) ['y']"),
        ("{f}/usermodel.py:make_model", "model.pt", "noX.npz", "ce", [], "missing key(s) ['X']"),
        ("{f}/usermodel.py:make_model", "model.pt", "col.pt", "ce", [], "labels of shape (n,)"),
        ("{f}/usermodel.py:make_model", "model.pt", "nan.pt", "ce", [], "non-finite"),
        ("{f}/usermodel.py:make_model", "model.pt", "garbage.pt", "ce", [], "not a torch file"),
        ("{f}/usermodel.py:make_model", "model.pt", "data.csv", "ce", [], "expected a .pt file"),
        ("{f}/usermodel.py:make_model", "model.pt", "data.pt", "hinge", [], "unknown loss 'hinge'"),
        ("{f}/usermodel.py:make_model", "model.pt", "data.pt", "logistic", [], "needs labels in {-1, +1}"),
        ("{f}/usermodel.py:make_model", "model.pt", "data.pt", "ce", ["--metrics", "sharpness,hessian"],
         "unknown metric(s) ['hessian']"),
        ("{f}/usermodel.py:make_model", "model.pt", "data.pt", "ce", ["--k", "0"], "--k must be between 1"),
        ("{f}/usermodel.py:make_model", "model.pt", "data.pt", "ce", ["--dtype", "bfloat16"], "--dtype"),
        ("{f}/usermodel.py:make_plain", "plain.pt", "binary.pt", "square", ["--metrics", "trace",
                                                                           "--trace-matvecs", "0"],
         "--trace-matvecs must be ≥ 1"),
    ],
)
def test_bad_input_one_line_exit_2(user, model, checkpoint, data, loss, extra, message):
    folder = user[0]
    _bad_files(folder)
    result = _invoke([model.format(f=folder), "--checkpoint", str(folder / checkpoint), "--data",
                      str(folder / data), "--loss", loss, *extra])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert message in text, text
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text


def _write_idx(path, array, magic):
    import struct

    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for dim in array.shape:
            f.write(struct.pack(">I", dim))
        f.write(array.astype(np.uint8).tobytes())


def test_named_data_set_from_data_dir(tmp_path, monkeypatch):
    # a tiny MNIST test split in IDX form: 30 images of 3 classes; --data mnist:test:12 reads a balanced
    # subset of 12, standardised with its own statistics (checked by hand), and --json equals il.sharpness
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    labels = np.arange(30) % 3
    (tmp_path / "mnist").mkdir()
    _write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte", images, 2051)
    _write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", labels, 2049)
    (tmp_path / "net.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def make():
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
    """))
    result = _invoke([f"{tmp_path}/net.py:make", "--data", "mnist:test:12", "--data-dir", str(tmp_path),
                      "--loss", "ce", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)

    from implicitlab.data import balanced_subset
    from implicitlab.measure import load_named_data

    X, y = load_named_data("mnist:test:12", tmp_path)
    idx = balanced_subset(labels, 12, seed=0)
    pixels = images[idx].astype(np.float64) / 255.0
    by_hand = (pixels - pixels.mean()) / pixels.std()
    assert X.shape == (12, 1, 28, 28) and X.dtype == torch.float64
    np.testing.assert_allclose(X[:, 0].numpy(), by_hand, rtol=1e-12, atol=1e-12)
    assert y.tolist() == labels[idx].tolist() and sorted(np.bincount(y.numpy()).tolist()) == [4, 4, 4]
    sys.path.insert(0, str(tmp_path))
    try:
        import net
    finally:
        sys.path.remove(str(tmp_path))
    ref = il.sharpness(net.make().eval().double(), "ce", X, y)
    assert out["sharpness"]["value"] == pytest.approx(float(ref.values[0]), rel=1e-10)
    assert out["problem"]["data"] == "mnist:test:12"

    for spec, message in (("mnist:val", "the split must be train or test"), ("mnist:test:0", "positive integer"),
                          ("mnist:test:31", "holds 30 examples"), ("fashion", "no such file, and not a named data set"),
                          ("cifar10", "cifar10")):
        bad = _invoke([f"{tmp_path}/net.py:make", "--data", spec, "--data-dir", str(tmp_path), "--loss", "ce"])
        assert bad.exit_code == 2 and message in bad.output, (spec, bad.output)
        assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output


@pytest.mark.slow
def test_nproc_2_splits_the_data_and_prints_the_one_process_numbers_once(user):
    """``--nproc 2``: torchrun on 2 loopback ranks, 40 examples as 20 + 20 (a batch-norm model in eval mode);
    one JSON object, from rank 0, equal to one process to 1e-10 (trace: the same probes)."""
    import subprocess

    folder, mod, _, _, X, y, _ = user
    args = [f"{folder}/usermodel.py:make_model", "--checkpoint", str(folder / "model.pt"), "--data",
            str(folder / "data.pt"), "--loss", "ce", "--metrics", "sharpness,spectrum,trace,margin,norms",
            "--trace-matvecs", "8", "--json", "--dist-timeout", "60"]
    proc = subprocess.run([sys.executable, "-m", "implicitlab", "measure", *args, "--nproc", "2"],
                          capture_output=True, text=True, timeout=240, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # rank 0 prints, rank 1 does not
    two = json.loads(lines[0])
    assert two["problem"]["distributed"] == {"world_size": 2, "backend": "gloo", "shard_sizes": [20, 20]}
    import warnings

    with warnings.catch_warnings():  # the margin of this non-homogeneous model warns (as on the ranks)
        warnings.simplefilter("ignore", il.NotHomogeneousWarning)
        one = measure(prepare(args[0], folder / "model.pt", folder / "data.pt", "ce",
                              metrics="sharpness,spectrum,trace,margin,norms"), trace_matvecs=8)
    assert two["problem"]["num_examples"] == one["problem"]["num_examples"] == 40
    pairs = [(two["sharpness"]["value"], one["sharpness"]["value"]), (two["trace"]["value"], one["trace"]["value"]),
             (two["spectrum"]["max"], one["spectrum"]["max"]), (two["spectrum"]["trace"], one["spectrum"]["trace"]),
             (two["margin"]["min_margin"], one["margin"]["min_margin"])]
    pairs += list(zip(two["spectrum"]["top"], one["spectrum"]["top"]))
    for a, b in pairs:
        assert abs(a - b) <= 1e-10 * (1 + abs(b))
    assert two["norms"] == one["norms"]


def test_spectrum_counts_exact_zero_eigenvalues_as_zero_not_negative():
    """A linear model with more weights than examples: 2XᵀX/n has rank n, so d − n eigenvalues are exactly 0
    and come out of eigvalsh as ±1e-17-ish; none of them is a negative eigenvalue."""
    torch.manual_seed(0)
    n, d = 3, 12
    X = torch.randn(n, d, dtype=torch.float64)
    y = torch.randn(n, dtype=torch.float64)
    model = torch.nn.Linear(d, 1, bias=False).double()
    from implicitlab.measure import Problem

    problem = Problem(model=model.eval(), X=X, y=y, loss="square", metrics=("spectrum",), dtype=torch.float64,
                      num_params=d)
    spec = measure(problem)["spectrum"]
    exact = torch.linalg.eigvalsh(2 * X.T @ X / n)  # the Hessian of the mean square loss (no ½)
    assert spec["max"] == pytest.approx(float(exact[-1]), rel=1e-12)
    assert spec["num_zero"] == d - n and spec["num_negative"] == 0
    raw = il.explicit_hessian(model, "square", X, y)
    assert int((torch.linalg.eigvalsh(raw) < 0).sum()) > 0  # what a bare sign count would have reported
