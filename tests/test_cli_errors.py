"""The CLI never shows a traceback for bad input: a corrupt or foreign store, corrupt CIFAR-10 files, a config
that needs more memory than the machine has — one line naming the file or field, exit code 2, nothing written."""

import sqlite3
import zipfile

import pytest
from typer.testing import CliRunner

from implicitlab.cli import app
from implicitlab.config import apply_overrides
from implicitlab.experiments import get

runner = CliRunner()


def _one_line_exit_2(result, message):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert message in text, text
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text


def _garbage(path):
    path.write_bytes(b"this is not SQLite " * 100)


def _foreign(path):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    con.commit()
    con.close()


def _old_runs_table(path):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (id INTEGER, name TEXT)")
    con.commit()
    con.close()


def _command(name, out, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("experiment: sweep-demo\npreset: tiny\ngrid:\n  lr: [0.05, 0.1]\n")
    return {
        "runs": ["runs", "--out", str(out)],
        "export": ["export", str(tmp_path / "table.csv"), "--out", str(out)],
        "check": ["check", "--preset", "tiny", "--only", "poggio2018-fig7", "--out", str(out)],
        "sweep": ["sweep", str(spec), "--out", str(out)],
        "run": ["run", "poggio2018-fig7", "--preset", "tiny", "--out", str(out)],
    }[name]


@pytest.mark.parametrize("command", ["runs", "export", "check", "sweep", "run"])
@pytest.mark.parametrize("make,why", [(_garbage, "file is not a database"),
                                      (_foreign, "with the tables users, none of runs and tables"),
                                      (_old_runs_table, "table 'runs' lacks the columns")])
def test_a_corrupt_or_foreign_store_one_line_exit_2_untouched(tmp_path, command, make, why):
    out = tmp_path / "results"
    out.mkdir()
    store = out / "implicitlab.sqlite"
    make(store)
    before = store.read_bytes()
    result = runner.invoke(app, _command(command, out, tmp_path), env={"COLUMNS": "250"})
    _one_line_exit_2(result, f"{store}: not an implicitlab results store")
    assert why in result.output and "choose another --out" in result.output
    assert store.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["implicitlab.sqlite"]
    assert not (tmp_path / "table.csv").exists()


def _garbage_zip(folder):
    (folder / "cifar10-jpeg-q75.zip").write_bytes(b"PK\x03\x04 truncated " * 50)


def _zip_of_broken_images(folder):
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with zipfile.ZipFile(folder / "cifar10-jpeg-q75.zip", "w") as z:
        for split in ("train", "test"):
            for c in classes:
                z.writestr(f"{split}/{c}/0001.jpg", b"\xff\xd8 not really a jpeg")


@pytest.mark.parametrize("make,message", [(_garbage_zip, "not a readable zip"),
                                          (_zip_of_broken_images, "not a readable image")])
def test_corrupt_cifar_zip_one_line_exit_2_nothing_written(tmp_path, monkeypatch, make, message):
    bad = tmp_path / "BAD"
    bad.mkdir()
    make(bad)
    monkeypatch.setenv("IMPLICITLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", "poggio2018-fig1", "--preset", "tiny", "--data-dir", str(bad),
                                 "--out", str(out)], env={"COLUMNS": "250"})
    _one_line_exit_2(result, f"poggio2018-fig1: {bad / 'cifar10-jpeg-q75.zip'}")
    assert message in result.output and "--data-dir" in result.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["BAD"]


@pytest.mark.parametrize("corrupt", [False, True])
def test_missing_or_corrupt_mnist_one_line_exit_2_nothing_written(tmp_path, corrupt):
    bad = tmp_path / "BAD"
    bad.mkdir()
    if corrupt:  # an IDX image file whose header promises more images than it holds
        header = (0x0803).to_bytes(4, "big") + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        (bad / "train-images-idx3-ubyte").write_bytes(header + b"\0" * 100)
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", "poggio2018-norm-criterion", "--preset", "tiny", "--data-dir", str(bad),
                                 "--out", str(out)], env={"COLUMNS": "250"})
    _one_line_exit_2(result, "poggio2018-norm-criterion: ")
    assert "MNIST" in result.output and "--data-dir" in result.output
    assert not out.exists()


@pytest.mark.parametrize("experiment", ["mc2024-fig1", "mc2024-fig3"])
def test_a_config_too_big_for_the_machine_one_line_exit_2_nothing_written(tmp_path, experiment):
    out = tmp_path / "results"
    # 10⁷ layers of 5 × 5: the Lanczos basis alone would be ~10¹³ bytes, more than any machine has
    result = runner.invoke(app, ["run", experiment, "--set", "depth=10000000", "--out", str(out)],
                           env={"COLUMNS": "250"})
    _one_line_exit_2(result, f"{experiment}: this config needs about")
    assert "GB are available" in result.output and "depth" in result.output
    assert "--no-memory-check" in result.output
    assert not out.exists()


def test_a_sweep_point_too_big_for_the_machine_is_refused_before_anything_runs(tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text("experiment: mc2024-fig1\npreset: tiny\ngrid: {depth: [10, 10000000]}\n")
    out = tmp_path / "results"
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(out)], env={"COLUMNS": "250"})
    _one_line_exit_2(result, "mc2024-fig1: this config needs about")
    assert "--no-memory-check" in result.output and not out.exists()


def test_memory_estimate_covers_the_allocation_the_issue_saw():
    """`run mc2024-fig1 --set depth=100000` (quick) tried to allocate 80 GB: the Lanczos basis of the first step
    size's 2 × 10 runs, 200 vectors of D = 100000 · 5² float64 numbers. The estimate is at least that, and
    the quick preset itself stays small."""
    exp = get("mc2024-fig1")
    quick = exp.preset("quick")
    big = apply_overrides(quick, ["depth=100000"])
    first_step_size_basis = 200 * (2 * 10) * (100_000 * 5 * 5) * 8
    assert first_step_size_basis == 80_000_000_000
    assert exp.needed_bytes(big) >= first_step_size_basis
    # the last step size trains 6 × 10 runs side by side: three times that basis
    assert exp.needed_bytes(big) >= 3 * first_step_size_basis
    assert exp.needed_bytes(quick) < 100e6
    assert get("mc2024-fig3").needed_bytes(big) == exp.needed_bytes(big)  # a view: its source's runs
    assert get("poggio2018-fig7").needed_bytes(get("poggio2018-fig7").preset("tiny")) is None
