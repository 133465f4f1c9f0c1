"""Sweep specs: YAML and TOML give the same validated points; bad specs fail in one line, early."""

import pytest
from typer.testing import CliRunner

from implicitlab.cli import app
from implicitlab.config import config_hash
from implicitlab.sweep import SpecError, expand, load_spec, parse_spec

runner = CliRunner()

YAML = """
experiment: sweep-demo
preset: tiny
set: {num_steps: 50}
grid:
  init_scale: [0.01, 1e-1]     # 1e-1 arrives from YAML as a string; it is parsed as a number
  depth: [1, 2]
zip:
  lr: [0.05, 0.1]
  data_seed: [0, 1]
seeds: {start: 3, stop: 5}
"""

TOML = """
experiment = "sweep-demo"
preset = "tiny"
seeds = [3, 4]
[set]
num_steps = 50
[grid]
init_scale = [0.01, 0.1]
depth = [1, 2]
[zip]
lr = [0.05, 0.1]
data_seed = [0, 1]
"""


def _write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_toml_give_the_same_points_in_grid_zip_seed_order(tmp_path):
    a = expand(load_spec(_write(tmp_path, YAML)))
    b = expand(load_spec(_write(tmp_path, TOML, "spec.toml")))
    assert len(a) == 2 * 2 * 2 * 2
    assert [p.config_hash for p in a] == [p.config_hash for p in b]
    first, last = a[0].config, a[-1].config
    assert (first.init_scale, first.depth, first.lr, first.data_seed, first.seed) == (0.01, 1, 0.05, 0, 3)
    assert (last.init_scale, last.depth, last.lr, last.data_seed, last.seed) == (0.1, 2, 0.1, 1, 4)
    assert isinstance(last.init_scale, float) and all(p.config.num_steps == 50 for p in a)
    assert a[0].config_hash == config_hash(a[0].config)
    assert a[1].changes == {"init_scale": 0.01, "depth": 1, "lr": 0.05, "data_seed": 0, "seed": 4}


def test_duplicate_points_are_kept_once():
    spec = parse_spec({"experiment": "sweep-demo", "preset": "tiny", "grid": {"lr": [0.1, "0.1", 1e-1]}})
    assert len(expand(spec)) == 1


def test_tuple_fields_take_lists():
    spec = parse_spec({"experiment": "poggio2018-fig7", "preset": "tiny", "grid": {"depths": [[1, 2], [1, 2, 3]]}})
    assert [p.config.depths for p in expand(spec)] == [(1, 2), (1, 2, 3)]


@pytest.mark.parametrize(
    "text,message",
    [
        ("experiment: sweep-demo\ngrid: {lr: [0.1, 0.2\n", "is malformed"),
        ("- just\n- a list\n", "expected a mapping"),
        ("experiment: sweep-demo\ngrid: {colour: [1, 2]}\n", "unknown config field 'colour'"),
        ("experiment: sweep-demo\ngrid: {lr: []}\n", "grid.lr is empty"),
        ("experiment: sweep-demo\ngrid: {}\n", "empty grid"),
        ("experiment: sweep-demo\nseeds: []\n", "seeds is empty"),
        ("experiment: sweep-demo\ngrid: {depth: [1, 2.5]}\n", "grid.depth: expected an integer, got 2.5"),
        ("experiment: sweep-demo\ngrid: {lr: [0.1, fast]}\n", "grid.lr: expected a number, got 'fast'"),
        ("experiment: sweep-demo\ngrid: {dtype: [true]}\n", "grid.dtype: expected a string"),
        ("experiment: sweep-demo\ngrid: {lr: 0.1}\n", "must be a list of values"),
        ("experiment: sweep-demo\ngrdi: {lr: [0.1]}\n", "unknown key 'grdi'"),
        ("experiment: sweep-demo\nzip: {lr: [0.1, 0.2], seed: [1]}\n", "zip lists must have one length"),
        ("experiment: sweep-demo\ngrid: {seed: [1]}\nseeds: [1, 2]\n", "'seed' is set in more than one place"),
        ("experiment: sweep-demo\ngrid: {lr: [0.1, -1]}\n", "point 2 (lr=-1): lr must be positive"),
        ("experiment: sweep-demo\ngrid: {num_examples: [3, 9]}\n", "num_examples must be < width"),
        ("experiment: nope\nseeds: [1]\n", "unknown experiment 'nope'"),
        ("experiment: sweep-demo\npreset: huge\nseeds: [1]\n", "no preset 'huge'"),
        ("experiment: test-tuple-batch\nseeds: [1]\n", "has no 'seed' field"),
        ("grid: {lr: [0.1]}\n", "'experiment' (a name) is required"),
    ],
)
def test_bad_spec_one_line_exit_2_nothing_written(tmp_path, text, message):
    spec = _write(tmp_path, text)
    out = tmp_path / "results"
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(out)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert message in line, line
    assert len(line.splitlines()) == 1, line
    assert not out.exists()
    with pytest.raises(SpecError):
        expand(load_spec(spec))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--backend", "slurm"], "unknown backend 'slurm'"),
        (["--workers", "0"], "--workers must be ≥ 1"),
        (["--batch-size", "0"], "--batch-size must be ≥ 1"),
        (["--backend", "process", "--ray-address", "1.2.3.4:6379"], "--ray-address needs --backend ray"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_bad_options_one_line_exit_2_nothing_written(tmp_path, args, message):
    spec = _write(tmp_path, "experiment: sweep-demo\npreset: tiny\nseeds: [0, 1]\n")
    out = tmp_path / "results"
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(out), *args], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="use a .yaml"):
        load_spec(_write(tmp_path, "experiment = 1", "spec.ini"))


def test_yaml_is_parsed_safely(tmp_path):
    # A python tag would run code under yaml.load; safe_load refuses it.
    spec = _write(tmp_path, "experiment: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(SpecError, match="malformed"):
        load_spec(spec)


def test_dry_run_counts_and_writes_nothing(tmp_path):
    spec = _write(tmp_path, YAML)
    out = tmp_path / "results"
    result = runner.invoke(app, ["sweep", str(spec), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "16 points of sweep-demo" in result.output
    assert not out.exists()
