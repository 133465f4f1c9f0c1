"""The command line: bad input fails with one line and exit code 2, before anything is written."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from implicitlab.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "no-such-experiment"], "unknown experiment"),
        (["run", "poggio2018-fig7", "--preset", "huge"], "no preset 'huge'"),
        (["run", "poggio2018-fig7", "--preset", "tiny", "--set", "colour=3"], "unknown config key 'colour'"),
        (["run", "poggio2018-fig7", "--preset", "tiny", "--set", "gd_steps=many"], "expected an integer"),
        (["run", "poggio2018-fig7", "--preset", "tiny", "--set", "gd_lr=-0.5"], "gd_lr must be positive"),
        (["run", "soudry2018-linear", "--preset", "tiny", "--set", "lr_factor=-1"], "lr_factor must be positive"),
        (["run", "soudry2018-linear", "--preset", "tiny", "--set", "datasets=mnist"], "unknown dataset"),
        (["run", "soudry2018-linear", "--preset", "tiny", "--set", "num_steps"], "key=value"),
        (["run", "poggio2018-fig7", "--preset", "tiny", "--device", "tpu"], "unknown device"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "results"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert message in text
    assert len(text.splitlines()) == 1, text
    assert not out.exists()


def test_list_shows_experiments_and_presets():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    for name in ("soudry2018-linear", "poggio2018-fig7"):
        assert name in result.output
    assert "tiny, quick, full" in result.output


def test_run_tiny_writes_files_store_and_prints_claims(tmp_path):
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", "poggio2018-fig7", "--preset", "tiny", "--out", str(out),
                                 "--set", "gd_steps=300", "--device", "cpu"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "GD follows the ODE" in result.output
    folder = out / "poggio2018-fig7" / "tiny"
    for name in ("config.json", "table.csv", "claims.json", "figure.png", "figure.svg"):
        assert (folder / name).stat().st_size > 0, name
    config = json.loads((folder / "config.json").read_text())
    assert config["config"]["gd_steps"] == 300
    assert config["environment"]["torch"].startswith("2.13")
    claims = json.loads((folder / "claims.json").read_text())
    assert {"name", "measured", "bound", "relation", "verdict", "source"} <= set(claims[0])
    con = sqlite3.connect(out / "implicitlab.sqlite")
    rows = con.execute("SELECT experiment, preset, status, config_hash, wall_time_s FROM runs").fetchall()
    assert len(rows) == 1 and rows[0][:3] == ("poggio2018-fig7", "tiny", "ok") and rows[0][4] > 0
    assert con.execute("SELECT COUNT(*) FROM tables").fetchone()[0] == 1
